//! The send side: bytes written by the application, kept until acknowledged, plus the
//! bookkeeping that decides what goes out next.
//!
//! Units are stream offsets; the FIN is one extra unit at the final length, so "the FIN
//! was acked" is simply `cum > fin`. Written bytes live in `Bytes` chunks so DATA frames
//! are zero-copy slices; small writes are gathered in a tail buffer first so a stream of
//! tiny writes does not become a stream of tiny chunks.
//!
//! Nothing is ever re-sent while the subflow that carried it lives (a subflow is an ordered
//! reliable pipe). Units carried by a subflow that died join [`SendBuffer::retransmit`],
//! which ACKs prune and which is served before new data.

use std::collections::VecDeque;
use std::ops::Range;

use bytes::{Bytes, BytesMut};

use super::ranges::RangeSet;

/// Writes are gathered into chunks of about this size.
const CHUNK: usize = 64 * 1024;
/// Chunks below this size are merged with a small neighbour when frozen.
const SMALL: usize = 4 * 1024;

/// One DATA frame's worth of units picked for sending.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    pub offset: u64,
    pub payload: Bytes,
    pub fin: bool,
}

impl Segment {
    /// The units this segment covers (payload plus the FIN unit).
    pub fn units(&self) -> Range<u64> {
        self.offset..self.offset + self.payload.len() as u64 + self.fin as u64
    }
}

#[derive(Debug)]
pub(crate) struct SendBuffer {
    /// Frozen bytes `(start offset, bytes)`, contiguous, from `base` up to `frozen_end`.
    chunks: VecDeque<(u64, Bytes)>,
    /// Written bytes not yet frozen: `[frozen_end, written)`.
    tail: BytesMut,
    frozen_end: u64,
    /// First offset still held (everything below is cumulatively acked).
    base: u64,
    written: u64,
    fin: Option<u64>,
    /// First unit never sent.
    next_new: u64,
    /// Cumulative ack (units, FIN included).
    cum: u64,
    /// Acked beyond `cum`.
    sacked: RangeSet,
    /// Units to re-send because their subflow died.
    retransmit: RangeSet,
    /// The peer accepts payload bytes below this offset.
    peer_window: u64,
    limit: usize,
}

impl SendBuffer {
    pub fn new(limit: usize, initial_window: u64) -> Self {
        SendBuffer {
            chunks: VecDeque::new(),
            tail: BytesMut::new(),
            frozen_end: 0,
            base: 0,
            written: 0,
            fin: None,
            next_new: 0,
            cum: 0,
            sacked: RangeSet::new(),
            retransmit: RangeSet::new(),
            peer_window: initial_window,
            limit,
        }
    }

    /// Bytes held: written and not cumulatively acked.
    pub fn buffered(&self) -> usize {
        (self.written - self.base) as usize
    }

    pub fn capacity(&self) -> usize {
        self.limit.saturating_sub(self.buffered())
    }

    pub fn is_finished(&self) -> bool {
        self.fin.is_some()
    }

    /// Data bytes cumulatively acked.
    pub fn acked_bytes(&self) -> u64 {
        self.cum.min(self.written)
    }

    /// Whether the FIN was sent and cumulatively acked.
    pub fn fin_acked(&self) -> bool {
        self.fin.is_some_and(|f| self.cum > f)
    }

    /// One past the highest unit ever sent: no ACK may go beyond it.
    pub fn sent_end(&self) -> u64 {
        self.next_new
    }

    /// Copies up to `capacity()` bytes of `data`; returns how many.
    pub fn write(&mut self, data: &[u8]) -> usize {
        debug_assert!(self.fin.is_none());
        let n = data.len().min(self.capacity());
        for piece in data[..n].chunks(CHUNK) {
            if self.tail.len() + piece.len() > CHUNK {
                self.freeze();
            }
            self.tail.extend_from_slice(piece);
        }
        self.written += n as u64;
        n
    }

    /// Takes `chunk` as it is, without a copy (a writer that copied it outside a lock);
    /// none of it if it does not all fit in `capacity()`. Returns how many bytes.
    pub fn write_chunk(&mut self, chunk: Bytes) -> usize {
        debug_assert!(self.fin.is_none());
        if chunk.is_empty() || chunk.len() > self.capacity() {
            return 0;
        }
        self.freeze();
        let n = chunk.len();
        self.chunks.push_back((self.frozen_end, chunk));
        self.frozen_end += n as u64;
        self.written += n as u64;
        n
    }

    pub fn finish(&mut self) {
        if self.fin.is_none() {
            self.fin = Some(self.written);
        }
    }

    /// Moves the tail into `chunks`, merging it into a small previous chunk so that
    /// alternating tiny writes and sends cannot pile up tiny chunks.
    fn freeze(&mut self) {
        if self.tail.is_empty() {
            return;
        }
        let tail = self.tail.split().freeze();
        let len = tail.len() as u64;
        match self.chunks.back_mut() {
            Some((_, last)) if last.len() < SMALL && tail.len() < SMALL => {
                let mut merged = BytesMut::with_capacity(last.len() + tail.len());
                merged.extend_from_slice(last);
                merged.extend_from_slice(&tail);
                *last = merged.freeze();
            }
            _ => self.chunks.push_back((self.frozen_end, tail)),
        }
        self.frozen_end += len;
    }

    /// Up to `max` bytes starting at `offset` (which must be held), never past the end of
    /// the chunk holding `offset`: a zero-copy slice. A segment ends at a chunk boundary
    /// rather than copying across it (one more DATA header instead of a copy of every
    /// byte).
    fn bytes_at(&mut self, offset: u64, max: usize) -> Bytes {
        let end = self.written.min(offset + max as u64);
        if end > self.frozen_end {
            self.freeze();
        }
        let idx = self.chunks.partition_point(|(s, _)| *s <= offset) - 1;
        let (start, chunk) = &self.chunks[idx];
        let from = (offset - start) as usize;
        let want = ((end - offset) as usize).min(chunk.len() - from);
        chunk.slice(from..from + want)
    }

    /// Builds a segment for the units starting at `start` and ending at most at `end`,
    /// with at most `max_payload` payload bytes.
    fn segment(&mut self, start: u64, end: u64, max_payload: usize) -> Segment {
        let data_end = self
            .fin
            .unwrap_or(self.written)
            .min(end)
            .min(start + max_payload as u64);
        let payload = if data_end > start {
            self.bytes_at(start, (data_end - start) as usize)
        } else {
            Bytes::new()
        };
        let data_end = start + payload.len() as u64;
        let fin = self.fin.is_some_and(|f| data_end == f && end > f);
        Segment {
            offset: start,
            payload,
            fin,
        }
    }

    /// Written bytes never sent yet (the backlog).
    pub fn unsent(&self) -> u64 {
        self.written.saturating_sub(self.next_new)
    }

    /// Units sent and not cumulatively acknowledged.
    pub fn outstanding(&self) -> u64 {
        self.next_new - self.cum
    }

    /// The lowest unit sent and not acknowledged: what the receiver waits for.
    pub fn oldest_unacked(&self) -> Option<u64> {
        (self.cum < self.next_new).then_some(self.cum)
    }

    /// A copy of already sent units within `r` that are not cumulatively acked, for a
    /// second path; None when nothing of `r` is left.
    pub fn copy(&mut self, r: Range<u64>, max_payload: usize) -> Option<Segment> {
        let start = r.start.max(self.cum);
        let end = r.end.min(self.next_new);
        if start >= end {
            return None;
        }
        let seg = self.segment(start, end, max_payload);
        (!seg.payload.is_empty() || seg.fin).then_some(seg)
    }

    pub fn has_retransmit(&self) -> bool {
        !self.retransmit.is_empty()
    }

    /// Takes the next segment to re-send.
    pub fn next_retransmit(&mut self, max_payload: usize) -> Option<Segment> {
        let r = self.retransmit.first()?;
        let seg = self.segment(r.start, r.end, max_payload);
        if seg.payload.is_empty() && !seg.fin {
            // Cannot happen while max_payload > 0; never loop on it.
            return None;
        }
        self.retransmit.remove(seg.units());
        Some(seg)
    }

    /// Whether never-sent units may go out now (within the peer's window).
    pub fn has_new(&self) -> bool {
        self.next_new < self.written.min(self.peer_window) || self.fin == Some(self.next_new)
    }

    /// Takes the next never-sent segment the peer's window allows.
    pub fn next_new(&mut self, max_payload: usize) -> Option<Segment> {
        if !self.has_new() {
            return None;
        }
        let limit = self.written.min(self.peer_window.max(self.next_new));
        let end = match self.fin {
            Some(f) if limit == f => f + 1,
            _ => limit,
        };
        let seg = self.segment(self.next_new, end, max_payload);
        if seg.payload.is_empty() && !seg.fin {
            return None;
        }
        self.next_new = seg.units().end;
        Some(seg)
    }

    /// Applies a validated ACK. Returns whether buffer space was freed.
    pub fn on_ack(&mut self, cum: u64, ranges: &[Range<u64>], window: u64) -> bool {
        self.peer_window = self.peer_window.max(window);
        for r in ranges {
            if r.end > self.cum {
                self.sacked.insert(r.clone());
                self.retransmit.remove(r.clone());
            }
        }
        if cum <= self.cum {
            return false;
        }
        self.cum = cum;
        self.sacked.remove_below(cum);
        self.retransmit.remove_below(cum);
        let new_base = cum.min(self.written);
        if new_base <= self.base {
            return false;
        }
        self.base = new_base;
        while let Some((start, chunk)) = self.chunks.front() {
            if start + chunk.len() as u64 <= self.base {
                self.chunks.pop_front();
            } else {
                break;
            }
        }
        if self.chunks.is_empty() && self.frozen_end < self.base {
            // Acked bytes still in the tail: drop them from it.
            let drop = (self.base - self.frozen_end) as usize;
            let _ = self.tail.split_to(drop);
            self.frozen_end = self.base;
        }
        true
    }

    /// Units that were in flight on a lost subflow: re-send those not yet acked.
    pub fn on_lost(&mut self, lost: &RangeSet) {
        for r in lost.iter() {
            let start = r.start.max(self.cum);
            if start < r.end {
                self.retransmit.insert(start..r.end);
            }
        }
        if !self.sacked.is_empty() && !lost.is_empty() {
            for s in self.sacked.iter() {
                self.retransmit.remove(s);
            }
        }
    }

    #[cfg(test)]
    pub fn retransmit_units(&self) -> u64 {
        self.retransmit.covered()
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)] // one-range ACKs are the point
mod tests {
    use super::*;

    fn all_new(b: &mut SendBuffer, max: usize) -> Vec<Segment> {
        std::iter::from_fn(|| b.next_new(max)).collect()
    }

    #[test]
    fn segments_end_at_chunk_boundaries_without_copying() {
        let mut b = SendBuffer::new(1 << 20, 1 << 20);
        assert_eq!(b.write(&vec![1; CHUNK + 1000]), CHUNK + 1000);
        b.finish();
        let segs = all_new(&mut b, 50_000);
        let lens: Vec<usize> = segs.iter().map(|s| s.payload.len()).collect();
        assert_eq!(lens, vec![50_000, CHUNK - 50_000, 1000]);
        assert!(segs[2].fin);
        // The second segment is a slice of the first chunk: right after the first one.
        assert_eq!(segs[1].payload.as_ptr(), segs[0].payload[50_000..].as_ptr());
    }

    #[test]
    fn a_chunk_is_taken_whole_without_a_copy_or_not_at_all() {
        let mut b = SendBuffer::new(30_000, 1 << 20);
        assert_eq!(b.write(&[1; 10]), 10);
        let chunk = Bytes::from(vec![2u8; 20_000]);
        assert_eq!(b.write_chunk(chunk.clone()), 20_000);
        assert_eq!(b.write_chunk(Bytes::from(vec![3u8; 9_991])), 0, "does not fit");
        assert_eq!(b.write(&[4; 5]), 5);
        b.finish();
        let segs = all_new(&mut b, 50_000);
        let lens: Vec<usize> = segs.iter().map(|s| s.payload.len()).collect();
        assert_eq!(lens, vec![10, 20_000, 5]);
        assert_eq!(segs[1].payload.as_ptr(), chunk.as_ptr(), "the chunk itself is sent");
        assert_eq!(segs[2].units(), 20_010..20_016, "then the FIN");
    }

    #[test]
    fn segments_cover_the_stream_and_fin() {
        let mut b = SendBuffer::new(1 << 20, 1 << 20);
        for i in 0..100u8 {
            assert_eq!(b.write(&[i; 3]), 3);
        }
        b.finish();
        let segs = all_new(&mut b, 128);
        let bytes: Vec<u8> = segs.iter().flat_map(|s| s.payload.to_vec()).collect();
        assert_eq!(bytes.len(), 300);
        assert!(bytes.chunks(3).enumerate().all(|(i, c)| c == [i as u8; 3]));
        assert!(segs.last().unwrap().fin);
        assert_eq!(b.sent_end(), 301);
        assert!(b.next_new(128).is_none());
    }

    #[test]
    fn back_pressure_window_and_acks() {
        let mut b = SendBuffer::new(1000, 600);
        assert_eq!(b.write(&[1; 800]), 800);
        assert_eq!(b.write(&[2; 800]), 200);
        assert_eq!(b.write(&[3; 1]), 0);
        let segs = all_new(&mut b, 10_000);
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].payload.len(), 600);
        assert!(b.on_ack(600, &[], 2000));
        assert_eq!(b.capacity(), 600);
        let segs = all_new(&mut b, 10_000);
        assert_eq!(segs[0].units(), 600..1000);
        b.finish();
        let segs = all_new(&mut b, 10_000);
        assert_eq!(segs[0].units(), 1000..1001);
        assert!(segs[0].fin && segs[0].payload.is_empty());
        let mut lost = RangeSet::new();
        lost.insert(600..1001);
        b.on_lost(&lost);
        b.on_ack(600, &[700..800], 2000);
        assert_eq!(b.retransmit_units(), 301);
        let r = b.next_retransmit(50).unwrap();
        assert_eq!(r.units(), 600..650);
        let r = b.next_retransmit(500).unwrap();
        assert_eq!(r.units(), 650..700);
        let r = b.next_retransmit(500).unwrap();
        assert_eq!(r.units(), 800..1001);
        assert!(r.fin);
        assert!(!b.fin_acked());
        b.on_ack(1001, &[], 2000);
        assert!(b.fin_acked());
        assert_eq!(b.buffered(), 0);
    }
}
