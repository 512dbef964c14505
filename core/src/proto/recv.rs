//! The receive side: reassembly of DATA arriving on any subflow, in any order, possibly
//! twice, into one in-order byte stream, and the window that bounds its memory.
//!
//! The window is absolute: the peer may send payload bytes at offsets below
//! `bytes_read + recv_window`. Everything buffered (in-order unread bytes plus
//! out-of-order segments) lies between `bytes_read` and that limit, so memory never
//! exceeds `recv_window` (plus the records that zero-copy payload slices keep alive).
//! Anything beyond the window is a protocol violation, not something to buffer.
//!
//! Duplicates — retransmissions of units that did arrive, or the same DATA carried by
//! two subflows — are trimmed and counted, never delivered twice.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;

use bytes::Bytes;

use super::ranges::RangeSet;
use super::ProtocolViolation;

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

#[derive(Debug)]
pub(crate) struct RecvBuffer {
    /// In-order unread bytes, starting at `read_off`.
    ready: VecDeque<Bytes>,
    /// Out-of-order segments beyond `data_end`, disjoint, keyed by offset.
    ooo: BTreeMap<u64, Bytes>,
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
}

impl RecvBuffer {
    pub fn new(window: usize, min_window: u64) -> Self {
        RecvBuffer {
            ready: VecDeque::new(),
            ooo: BTreeMap::new(),
            received: RangeSet::new(),
            read_off: 0,
            data_end: 0,
            fin: None,
            highest: 0,
            window: window as u64,
            min_window,
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
    #[cfg(test)]
    pub fn buffered(&self) -> u64 {
        let ready = self.data_end - self.read_off;
        ready + self.ooo.values().map(|b| b.len() as u64).sum::<u64>()
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

    /// Takes in one DATA frame.
    pub fn receive(
        &mut self,
        offset: u64,
        payload: Bytes,
        fin: bool,
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
        let mut out = Received::default();
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
            if self.fin.is_none() {
                self.fin = Some(end);
                if end > self.data_end {
                    self.received.insert(end..end + 1);
                } else {
                    out.readable = true;
                }
            }
        } else if let Some(f) = self.fin {
            if end > f {
                return Err(ProtocolViolation::DataBeyondFin { end, fin: f });
            }
        }
        self.highest = self.highest.max(end);

        if end <= self.data_end {
            out.duplicate_bytes = len;
            return Ok(out);
        }
        let (mut offset, mut payload) = (offset, payload);
        if offset < self.data_end {
            let skip = self.data_end - offset;
            out.duplicate_bytes += skip;
            payload = payload.slice(skip as usize..);
            offset = self.data_end;
        }
        if offset == self.data_end {
            out.new_bytes += payload.len() as u64;
            self.data_end = end;
            self.ready.push_back(payload);
            // Pull in out-of-order segments that now connect.
            while let Some(entry) = self.ooo.first_entry() {
                let start = *entry.key();
                if start > self.data_end {
                    break;
                }
                let seg = entry.remove();
                let seg_end = start + seg.len() as u64;
                if seg_end > self.data_end {
                    // ooo segments are disjoint from what we had, so this cannot trim
                    // more than the part `payload` overlapped.
                    let skip = (self.data_end - start) as usize;
                    out.new_bytes -= skip as u64;
                    out.duplicate_bytes += skip as u64;
                    self.ready.push_back(seg.slice(skip..));
                    self.data_end = seg_end;
                } else {
                    out.new_bytes -= seg.len() as u64;
                    out.duplicate_bytes += seg.len() as u64;
                }
            }
            let cum = self.cum();
            self.received.remove_below(cum);
            out.readable = true;
        } else {
            let fresh = self.insert_ooo(offset, payload);
            out.new_bytes += fresh;
            out.duplicate_bytes += (end - offset) - fresh;
            self.received.insert(offset..end);
        }
        Ok(out)
    }

    /// Stores the parts of `[offset, offset+len)` not already held out of order; returns
    /// how many bytes were new.
    fn insert_ooo(&mut self, offset: u64, payload: Bytes) -> u64 {
        let end = offset + payload.len() as u64;
        let mut held: Vec<Range<u64>> = Vec::new();
        if let Some((&s, b)) = self.ooo.range(..offset).next_back() {
            if s + b.len() as u64 > offset {
                held.push(s..s + b.len() as u64);
            }
        }
        held.extend(
            self.ooo
                .range(offset..end)
                .map(|(&s, b)| s..s + b.len() as u64),
        );
        let mut pos = offset;
        let mut fresh = 0;
        let mut gaps = Vec::new();
        for h in held {
            if h.start > pos {
                gaps.push(pos..h.start);
            }
            pos = pos.max(h.end);
        }
        if pos < end {
            gaps.push(pos..end);
        }
        for g in gaps {
            fresh += g.end - g.start;
            let piece = payload.slice((g.start - offset) as usize..(g.end - offset) as usize);
            self.ooo.insert(g.start, piece);
        }
        fresh
    }

    /// Copies in-order bytes into `buf`; returns how many.
    pub fn read(&mut self, buf: &mut [u8]) -> usize {
        let mut n = 0;
        while n < buf.len() {
            let Some(front) = self.ready.front_mut() else {
                break;
            };
            let take = front.len().min(buf.len() - n);
            buf[n..n + take].copy_from_slice(&front[..take]);
            n += take;
            if take == front.len() {
                self.ready.pop_front();
            } else {
                *front = front.slice(take..);
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
            let Some(mut front) = self.ready.pop_front() else {
                break;
            };
            if front.len() > max - n {
                self.ready.push_front(front.split_off(max - n));
            }
            n += front.len();
            out.push(front);
        }
        self.read_off += n as u64;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn take_hands_over_the_payloads_up_to_max() {
        let mut r = RecvBuffer::new(1 << 20, 1 << 20);
        let first = b("hello ");
        r.receive(0, first.clone(), false).unwrap();
        r.receive(6, b("world"), false).unwrap();
        let mut out = Vec::new();
        assert_eq!(r.take(8, &mut out), 8);
        assert_eq!(out, vec![b("hello "), b("wo")]);
        assert_eq!(out[0].as_ptr(), first.as_ptr(), "no copy");
        assert_eq!(read_all(&mut r), "rld");
    }

    fn read_all(r: &mut RecvBuffer) -> String {
        let mut buf = [0u8; 256];
        let n = r.read(&mut buf);
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn reassembles_out_of_order_with_duplicates() {
        let mut r = RecvBuffer::new(100, 0);
        assert_eq!(r.receive(6, b("world"), true).unwrap().new_bytes, 5);
        assert_eq!(r.cum(), 0);
        assert_eq!(r.ack_ranges(32), vec![6..12]);
        let got = r.receive(3, b("lo wo"), false).unwrap();
        assert_eq!((got.new_bytes, got.duplicate_bytes), (3, 2));
        let got = r.receive(0, b("hel"), false).unwrap();
        assert_eq!((got.new_bytes, got.duplicate_bytes), (3, 0));
        assert_eq!(r.cum(), 12);
        assert!(r.ack_ranges(32).is_empty());
        assert_eq!(r.receive(0, b("hello"), false).unwrap().duplicate_bytes, 5);
        assert_eq!(read_all(&mut r), "hello world");
        assert!(r.at_fin());
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn partial_overlaps_are_trimmed_on_both_sides() {
        let mut r = RecvBuffer::new(100, 0);
        r.receive(0, b("hel"), false).unwrap();
        let got = r.receive(1, b("ello"), false).unwrap();
        assert_eq!((got.new_bytes, got.duplicate_bytes), (2, 2));
        r.receive(8, b("rld"), false).unwrap();
        let got = r.receive(6, b("wor"), false).unwrap();
        assert_eq!((got.new_bytes, got.duplicate_bytes), (2, 1));
        // Overlaps delivered data, fills the gap, overlaps both out-of-order segments.
        let got = r.receive(4, b("o worl"), false).unwrap();
        assert_eq!((got.new_bytes, got.duplicate_bytes), (1, 5));
        assert_eq!(read_all(&mut r), "hello world");
        assert_eq!(r.cum(), 11);
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn window_and_fin_are_enforced() {
        let mut r = RecvBuffer::new(10, 0);
        assert!(matches!(
            r.receive(5, b("123456"), false),
            Err(ProtocolViolation::DataBeyondWindow {
                end: 11,
                window: 10
            })
        ));
        r.receive(0, b("0123456789"), false).unwrap();
        assert_eq!(read_all(&mut r).len(), 10);
        assert_eq!(r.window(), 20);
        r.receive(12, b("ab"), true).unwrap();
        assert!(matches!(
            r.receive(12, b("abc"), true),
            Err(ProtocolViolation::FinChanged { .. })
        ));
        assert!(matches!(
            r.receive(13, b("bc"), false),
            Err(ProtocolViolation::DataBeyondFin { .. })
        ));
        assert_eq!(r.ack_ranges(32), vec![12..15]);
        r.receive(10, b("xy"), false).unwrap();
        assert_eq!(r.cum(), 15);
        let mut r = RecvBuffer::new(10, 0);
        r.receive(5, b("abc"), false).unwrap();
        assert!(matches!(
            r.receive(0, b("ab"), true),
            Err(ProtocolViolation::FinChanged { .. })
        ));
    }
}
