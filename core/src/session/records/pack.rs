//! Packing a flow's frames into numbered records for one subflow.

use std::ops::Range;
use std::time::Instant;

use bytes::BytesMut;

use super::keys::PN_LIMIT;
use super::seal::{RecordError, MAX_RECORD_PLAINTEXT, RECORD_HEADER_LEN, TAG_LEN};
use crate::proto::{FlowError, FlowState, Frame, SubflowId};
use crate::session::SessionKeys;

/// The plaintext limit of a fresh subflow's first record; it doubles with every record
/// that carries DATA, up to [`MAX_RECORD_PLAINTEXT`]. A record is opened only once whole,
/// and a fresh TCP connection delivers about 14 KB in its first round trip, doubling each
/// round (slow start): 64 KiB records would hold every byte of a resumed flow back for
/// three round trips. Small at first, like TLS's dynamic record sizing.
pub(crate) const FIRST_RECORD_LIMIT: usize = 4096;

/// The flow's packet numbers: every record on every subflow has its own, and a number is
/// never used twice under the flow's keys (it is the AEAD nonce). They end at
/// [`PN_LIMIT`]: the flow ends there rather than use one again.
#[derive(Debug, Default)]
pub(crate) struct PacketNumbers {
    next: u64,
}

impl PacketNumbers {
    /// A record of `frames` with the next number; `None` once all are used.
    pub(crate) fn number(&mut self, frames: Vec<Frame>) -> Option<Record> {
        let pn = self.next;
        if pn >= PN_LIMIT {
            return None;
        }
        self.next += 1;
        let plain_len = frames.iter().map(Frame::encoded_len).sum();
        Some(Record { pn, frames, plain_len })
    }

    /// Numbers that start at `next` (tests start near the limit).
    #[cfg(test)]
    pub(crate) fn starting_at(next: u64) -> PacketNumbers {
        PacketNumbers { next }
    }

    /// The number the next record takes.
    #[cfg(test)]
    pub(crate) fn next_number(&self) -> u64 {
        self.next
    }
}

/// How much one batch may hold: at most `records` records and about `bytes` sealed bytes
/// (the record that crosses the limit is kept whole).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchLimit {
    pub(crate) records: usize,
    pub(crate) bytes: usize,
}

/// One record of a batch: its packet number and its frames, not yet encoded.
#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) pn: u64,
    pub(crate) frames: Vec<Frame>,
    plain_len: usize,
}

impl Record {
    /// Bytes the record takes on the wire once sealed.
    pub(crate) fn sealed_len(&self) -> usize {
        RECORD_HEADER_LEN + self.plain_len + TAG_LEN
    }

    /// Whether the record carries DATA.
    #[cfg(test)]
    pub(crate) fn has_data(&self) -> bool {
        self.frames.iter().any(|f| matches!(f, Frame::Data { .. }))
    }
}

#[cfg(test)]
impl Record {
    /// A record with any number, even one a sender never uses.
    pub(crate) fn numbered(pn: u64, frames: Vec<Frame>) -> Record {
        let plain_len = frames.iter().map(Frame::encoded_len).sum();
        Record { pn, frames, plain_len }
    }
}

/// Records taken from the flow for one subflow in one go.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) records: Vec<Record>,
    /// Sealed length of all the records.
    pub(crate) sealed_len: usize,
    /// For each record with DATA: where its sealed bytes end within the batch, and each
    /// DATA unit range it carries.
    pub(crate) data_log: Vec<(usize, Range<u64>)>,
}

impl Batch {
    pub(crate) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Appends the batch to `out`, each record encoded between its header and its tag and
    /// sealed in place.
    pub(crate) fn seal_into(self, keys: &SessionKeys, out: &mut BytesMut) -> Result<(), RecordError> {
        for record in self.records {
            seal_record_into(keys, &record, out)?;
        }
        Ok(())
    }

    /// Numbers `open` and adds it; `false` when no number is left.
    fn close(&mut self, pns: &mut PacketNumbers, open: OpenRecord) -> bool {
        let Some(record) = pns.number(open.frames) else {
            return false;
        };
        debug_assert_eq!(record.plain_len, open.plain_len);
        self.sealed_len += record.sealed_len();
        let end = self.sealed_len;
        self.data_log.extend(open.units.into_iter().map(|u| (end, u)));
        self.records.push(record);
        true
    }
}

/// Encodes one record at the end of `out` and seals it there.
pub(crate) fn seal_record_into(keys: &SessionKeys, record: &Record, out: &mut BytesMut) -> Result<(), RecordError> {
    let start = out.len();
    out.reserve(record.sealed_len());
    out.resize(start + RECORD_HEADER_LEN, 0);
    for frame in &record.frames {
        frame.encode(out);
    }
    out.resize(out.len() + TAG_LEN, 0);
    keys.seal_record(record.pn, &mut out[start..])
}

/// The record being filled.
#[derive(Default)]
struct OpenRecord {
    frames: Vec<Frame>,
    plain_len: usize,
    has_data: bool,
    units: Vec<Range<u64>>,
}

/// Packs frames for one subflow, remembering its record size limit.
#[derive(Debug)]
pub(crate) struct Packer {
    limit: usize,
}

impl Default for Packer {
    fn default() -> Self {
        Packer { limit: FIRST_RECORD_LIMIT }
    }
}

impl Packer {
    /// The plaintext limit of the next record.
    #[cfg(test)]
    pub(crate) fn record_limit(&self) -> usize {
        self.limit
    }

    /// Takes frames for subflow `id` from `flow` and closes them into numbered records,
    /// until the flow has nothing more for it or the batch is full.
    ///
    /// Control frames followed by DATA go in a record of their own: a record is only read
    /// once whole, and an ACK, PONG or ABANDON should not wait behind 64 KiB of data.
    ///
    /// When the flow's packet numbers run out, the flow fails
    /// ([`FlowError::PacketNumbersExhausted`]) and the batch ends: a nonce is never used
    /// twice.
    pub(crate) fn pack(
        &mut self,
        flow: &mut FlowState,
        id: SubflowId,
        now: Instant,
        pns: &mut PacketNumbers,
        max: BatchLimit,
    ) -> Batch {
        let mut batch = Batch::default();
        let mut open: Option<OpenRecord> = None;
        loop {
            if open.is_none() && (batch.records.len() >= max.records || batch.sealed_len >= max.bytes) {
                break;
            }
            let room = self.limit - open.as_ref().map_or(0, |r| r.plain_len);
            let Some(frame) = flow.poll_transmit(id, now, room) else {
                match open.take() {
                    // Full, or all sent: close it and try a fresh record.
                    Some(record) => {
                        if record.has_data {
                            self.limit = (self.limit * 2).min(MAX_RECORD_PLAINTEXT);
                        }
                        if !batch.close(pns, record) {
                            flow.fail_unrecoverable(FlowError::PacketNumbersExhausted);
                            break;
                        }
                    }
                    None => break,
                }
                continue;
            };
            debug_assert!(frame.encoded_len() <= room, "poll_transmit overfilled a record");
            let data = matches!(frame, Frame::Data { .. });
            if data && open.as_ref().is_some_and(|r| !r.has_data) {
                if let Some(control) = open.take() {
                    if !batch.close(pns, control) {
                        flow.fail_unrecoverable(FlowError::PacketNumbersExhausted);
                        break;
                    }
                }
            }
            let record = open.get_or_insert_with(OpenRecord::default);
            if let Frame::Data { offset, fin, payload } = &frame {
                record.units.push(*offset..offset + payload.len() as u64 + u64::from(*fin));
            }
            record.plain_len += frame.encoded_len();
            record.has_data |= data;
            record.frames.push(frame);
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{FlowConfig, FlowStatus};

    fn flow_with(data: usize) -> (FlowState, SubflowId, Instant) {
        let now = Instant::now();
        let mut flow = FlowState::new(FlowConfig::default(), now);
        let id = flow.add_subflow(now);
        // The peer opens its window wide (the initial one is 64 KiB).
        flow.handle_frame(id, Frame::Ack { cum: 0, ranges: vec![], window: 16 << 20 }, now).unwrap();
        flow.write(&vec![7u8; data]).unwrap();
        (flow, id, now)
    }

    const WIDE: BatchLimit = BatchLimit { records: usize::MAX, bytes: usize::MAX };

    #[test]
    fn records_start_small_and_double_up_to_the_protocol_limit() {
        let (mut flow, id, now) = flow_with(1 << 20);
        let mut pns = PacketNumbers::default();
        let mut packer = Packer::default();
        let batch = packer.pack(&mut flow, id, now, &mut pns, WIDE);
        let sizes: Vec<usize> = batch.records.iter().filter(|r| r.has_data()).map(|r| r.plain_len).collect();
        assert!(sizes[0] <= FIRST_RECORD_LIMIT, "{sizes:?}");
        assert!(sizes.windows(2).take(4).all(|w| w[1] > w[0]), "grows: {sizes:?}");
        assert!(sizes.iter().all(|s| *s <= MAX_RECORD_PLAINTEXT));
        assert!(sizes.iter().any(|s| *s > MAX_RECORD_PLAINTEXT - 1024), "reaches the limit: {sizes:?}");
        assert_eq!(packer.record_limit(), MAX_RECORD_PLAINTEXT);
        let pns_used: Vec<u64> = batch.records.iter().map(|r| r.pn).collect();
        assert_eq!(pns_used, (0..batch.records.len() as u64).collect::<Vec<_>>());
        assert_eq!(batch.sealed_len, batch.records.iter().map(Record::sealed_len).sum::<usize>());
    }

    #[test]
    fn control_frames_do_not_wait_in_a_data_record_and_the_log_says_where_data_went() {
        let (mut flow, id, now) = flow_with(10_000);
        let mut pns = PacketNumbers::starting_at(40);
        let batch = Packer::default().pack(&mut flow, id, now, &mut pns, WIDE);
        // A new subflow speaks first with control frames (its resume ACK, a PING).
        assert!(!batch.records[0].has_data(), "{:?}", batch.records[0]);
        assert!(batch.records[1..].iter().all(|r| r.frames.iter().all(|f| matches!(f, Frame::Data { .. }))));
        assert_eq!(batch.records[0].pn, 40);
        let logged: u64 = batch.data_log.iter().map(|(_, u)| u.end - u.start).sum();
        assert_eq!(logged, 10_000);
        let mut end = 0;
        for r in &batch.records {
            end += r.sealed_len();
            if r.has_data() {
                assert!(batch.data_log.iter().any(|(e, _)| *e == end));
            }
        }
    }

    #[test]
    fn a_batch_stops_at_its_limits() {
        let (mut flow, id, now) = flow_with(1 << 20);
        let mut pns = PacketNumbers::default();
        let mut packer = Packer::default();
        let batch = packer.pack(&mut flow, id, now, &mut pns, BatchLimit { records: 3, bytes: usize::MAX });
        assert_eq!(batch.records.len(), 3);
        let batch = packer.pack(&mut flow, id, now, &mut pns, BatchLimit { records: 100, bytes: 100_000 });
        assert!(batch.sealed_len >= 100_000 && batch.sealed_len < 100_000 + MAX_RECORD_PLAINTEXT + 64);
        assert_eq!(batch.records[0].pn, 3, "numbers go on across batches");
    }

    #[test]
    fn the_flow_ends_when_packet_numbers_run_out_and_none_is_used_twice() {
        let (mut flow, id, now) = flow_with(200_000);
        let mut pns = PacketNumbers::starting_at(PN_LIMIT - 3);
        let batch = Packer::default().pack(&mut flow, id, now, &mut pns, WIDE);
        let used: Vec<u64> = batch.records.iter().map(|r| r.pn).collect();
        assert_eq!(used, vec![PN_LIMIT - 3, PN_LIMIT - 2, PN_LIMIT - 1]);
        assert_eq!(flow.status(), FlowStatus::Failed(FlowError::PacketNumbersExhausted));
        let (client, _server) = crate::session::session_pair();
        batch.seal_into(&client, &mut BytesMut::new()).expect("the last numbers seal");
        assert!(Packer::default().pack(&mut flow, id, now, &mut pns, WIDE).is_empty());
        assert!(pns.number(vec![Frame::Ping { id: 0 }]).is_none());
    }

    #[test]
    fn a_sealed_batch_is_exactly_its_records() {
        let (client, _server) = crate::session::session_pair();
        let (mut flow, id, now) = flow_with(50_000);
        let batch = Packer::default().pack(&mut flow, id, now, &mut PacketNumbers::default(), WIDE);
        let want = batch.sealed_len;
        let mut out = BytesMut::new();
        batch.seal_into(&client, &mut out).unwrap();
        assert_eq!(out.len(), want);
    }
}
