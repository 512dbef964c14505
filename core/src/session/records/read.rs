//! Reading records: cutting them off a subflow's bytes, opening them, and handing their
//! frames to the flow once, whatever subflow and order they came in.

use std::time::Instant;

use bytes::{Buf, BytesMut};

use super::keys::PN_LIMIT;
use super::seal::{parse_header, RECORD_HEADER_LEN};
use crate::proto::{FlowError, FlowState, Frame, FrameError, ProtocolViolation, ReadBuffer, SubflowId};
use crate::session::{ReplayWindow, SessionKeys};

/// A whole record cut off the byte stream, not yet authenticated.
#[derive(Debug)]
pub(crate) struct Sealed {
    pn: u64,
    /// Ciphertext and tag.
    body: BytesMut,
    place: Placement,
}

/// Where a record lay in the buffer it was read into: its first byte and the buffer's
/// end (the records cut off one buffer share that end; a live buffer's end is its own).
#[derive(Debug, Clone, Copy)]
struct Placement {
    at: usize,
    end: usize,
}

/// Why a record could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OpenError {
    /// Not sealed with this flow's key for this packet number: forged, corrupted, or
    /// meant for another flow.
    #[error("record failed authentication (forged, corrupted or for another flow)")]
    Forged,
    /// Authentic, but its frames do not decode: the peer is broken.
    #[error("malformed frame: {0}")]
    Malformed(FrameError),
}

/// An authenticated record's frames.
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) pn: u64,
    /// Bytes the record took on the wire.
    pub(crate) wire_len: usize,
    pub(crate) frames: Vec<Frame>,
    /// The flow's keys were retired after this many forged records: nothing was opened,
    /// and the flow ends.
    retired: Option<u64>,
    /// Where the record was read; its payloads are slices of that buffer.
    place: Option<Placement>,
}

/// How many more bytes `buf` needs before its first record is whole (at least the
/// header's when not even that is there).
pub(crate) fn bytes_wanted(buf: &[u8]) -> usize {
    match buf.get(..RECORD_HEADER_LEN) {
        Some(header) => (RECORD_HEADER_LEN + parse_header(header).0).saturating_sub(buf.len()),
        None => RECORD_HEADER_LEN - buf.len(),
    }
}

/// Cuts the first record off `buf` once it is all there.
pub(crate) fn split_record(buf: &mut BytesMut) -> Option<Sealed> {
    if buf.len() < RECORD_HEADER_LEN || bytes_wanted(buf) > 0 {
        return None;
    }
    let (len, pn) = parse_header(&buf[..RECORD_HEADER_LEN]);
    let at = buf.as_ptr() as usize;
    let place = Placement { at, end: at + buf.capacity() };
    let mut body = buf.split_to(RECORD_HEADER_LEN + len);
    body.advance(RECORD_HEADER_LEN);
    Some(Sealed { pn, body, place })
}

/// Authenticates a record in place and decodes its frames. Once the flow's keys are
/// retired (too many forgeries), nothing is opened any more: the record only carries the
/// news to [`Receiver::deliver`], which ends the flow.
pub(crate) fn open(keys: &SessionKeys, sealed: Sealed) -> Result<Opened, OpenError> {
    let Sealed { pn, mut body, place } = sealed;
    let wire_len = RECORD_HEADER_LEN + body.len();
    if keys.recv.retired() {
        return Ok(Opened { pn, wire_len, frames: Vec::new(), retired: Some(keys.recv.forged()), place: None });
    }
    let n = keys.open_record(pn, &mut body).map_err(|_| OpenError::Forged)?;
    body.truncate(n);
    // Payloads stay slices of the buffer the record was read into; reassembly copies
    // the ones it keeps that are not worth what they would hold there.
    let frames = Frame::decode_all(body.freeze()).map_err(OpenError::Malformed)?;
    Ok(Opened { pn, wire_len, frames, retired: None, place: Some(place) })
}

/// What became of an opened record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Its frames went to the flow.
    Fresh,
    /// Dropped: its packet number was seen before, is too old to tell, or is one no
    /// sender uses (at or beyond [`PN_LIMIT`]); or the flow's keys are retired (the flow
    /// ends). Legitimate records refused this way cost nothing: the flow re-sends their
    /// data.
    Replayed,
}

/// The receiving side of the flow's records: which packet numbers it has taken.
#[derive(Debug)]
pub(crate) struct Receiver {
    replay: ReplayWindow,
    /// Per subflow, the buffer its records are read into now: its end, and where its
    /// first record began (a reader fills a buffer from its start, so that is its size).
    buffers: Vec<(SubflowId, usize, usize)>,
}

/// Subflows whose buffers are remembered (the oldest is forgotten first).
const BUFFERS_KEPT: usize = 16;

impl Default for Receiver {
    fn default() -> Self {
        Receiver { replay: ReplayWindow::new(), buffers: Vec::new() }
    }
}

impl Receiver {
    /// Hands `record`'s frames, which arrived on subflow `id`, to `flow`, unless its
    /// packet number was seen before. A violation condemns the subflow (frames after it
    /// in the record are not handled).
    pub(crate) fn deliver(
        &mut self,
        flow: &mut FlowState,
        id: SubflowId,
        record: Opened,
        now: Instant,
    ) -> Result<Delivery, ProtocolViolation> {
        if let Some(count) = record.retired {
            tracing::warn!(count, "records failed authentication: the flow ends");
            flow.fail_unrecoverable(FlowError::ForgedRecords { count });
            return Ok(Delivery::Replayed);
        }
        if record.pn >= PN_LIMIT || !self.replay.is_fresh(record.pn) {
            tracing::warn!(pn = record.pn, "replayed record dropped");
            return Ok(Delivery::Replayed);
        }
        self.replay.insert(record.pn);
        let buffer = record.place.map(|p| self.buffer(id, p));
        for frame in record.frames {
            flow.handle_frame_from(id, frame, now, buffer)?;
        }
        Ok(Delivery::Fresh)
    }

    /// The buffer a record of subflow `id` lies in.
    fn buffer(&mut self, id: SubflowId, p: Placement) -> ReadBuffer {
        let start = match self.buffers.iter_mut().find(|b| b.0 == id) {
            Some(b) if b.1 == p.end => {
                b.2 = b.2.min(p.at);
                b.2
            }
            Some(b) => {
                (b.1, b.2) = (p.end, p.at);
                p.at
            }
            None => {
                if self.buffers.len() == BUFFERS_KEPT {
                    self.buffers.remove(0);
                }
                self.buffers.push((id, p.end, p.at));
                p.at
            }
        };
        ReadBuffer { end: p.end, len: p.end - start }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::super::keys::{RecordKeys, EPOCH_BITS, MAX_FORGED};
    use super::super::pack::seal_record_into;
    use super::super::seal::{RecordError, TAG_LEN};
    use super::super::{BatchLimit, Packer, PacketNumbers, Record};
    use super::*;
    use crate::proto::{FlowConfig, FlowStatus, ReadOutcome};
    use crate::session::session_pair;

    fn sealed(keys: &SessionKeys, pn: u64, frames: Vec<Frame>) -> BytesMut {
        let mut out = BytesMut::new();
        seal_record_into(keys, &Record::numbered(pn, frames), &mut out).unwrap();
        out
    }

    fn data(offset: u64, bytes: &'static [u8]) -> Frame {
        Frame::Data { offset, fin: false, payload: Bytes::from_static(bytes) }
    }

    #[test]
    fn records_split_only_when_whole_and_bytes_wanted_says_how_many_are_missing() {
        let (c, _) = session_pair();
        let mut stream = sealed(&c, 1, vec![data(0, b"hello")]);
        stream.extend_from_slice(&sealed(&c, 2, vec![data(5, b"world")]));
        let total = stream.len();
        let mut buf = BytesMut::new();
        assert_eq!(bytes_wanted(&buf), RECORD_HEADER_LEN);
        buf.extend_from_slice(&stream[..3]);
        assert_eq!(bytes_wanted(&buf), RECORD_HEADER_LEN - 3);
        buf.extend_from_slice(&stream[3..RECORD_HEADER_LEN + 1]);
        assert!(split_record(&mut buf).is_none());
        assert_eq!(bytes_wanted(&buf), total / 2 - RECORD_HEADER_LEN - 1);
        buf.extend_from_slice(&stream[RECORD_HEADER_LEN + 1..]);
        assert_eq!(split_record(&mut buf).unwrap().pn, 1);
        assert_eq!(split_record(&mut buf).unwrap().pn, 2);
        assert!(split_record(&mut buf).is_none() && buf.is_empty());
    }

    #[test]
    fn forged_short_and_malformed_records_are_refused_by_kind() {
        let (c, s) = session_pair();
        let mut rec = sealed(&c, 9, vec![data(0, b"x")]);
        rec[RECORD_HEADER_LEN] ^= 1;
        assert_eq!(open(&s, split_record(&mut rec).unwrap()).unwrap_err(), OpenError::Forged);
        // A length shorter than the tag.
        let mut short = BytesMut::from(&[0u8, 3, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3][..]);
        assert_eq!(open(&s, split_record(&mut short).unwrap()).unwrap_err(), OpenError::Forged);
        // Authentic garbage: an unknown frame type.
        let mut garbage = BytesMut::new();
        garbage.resize(RECORD_HEADER_LEN, 0);
        garbage.extend_from_slice(&[0xee, 1, 2, 3]);
        garbage.resize(garbage.len() + TAG_LEN, 0);
        c.seal_record(3, &mut garbage).unwrap();
        assert!(matches!(open(&s, split_record(&mut garbage).unwrap()), Err(OpenError::Malformed(_))));
    }

    #[test]
    fn garbage_bytes_never_panic() {
        let (_, s) = session_pair();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            let mut buf = BytesMut::new();
            for _ in 0..(seed % 97) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                buf.extend_from_slice(&[seed as u8]);
            }
            while let Some(rec) = split_record(&mut buf) {
                assert!(open(&s, rec).is_err());
            }
        }
    }

    /// A record's frames reach the flow once: a replay of it, on the same subflow or
    /// another, is dropped.
    #[test]
    fn a_replayed_record_is_dropped_and_the_stream_is_intact() {
        let (c, s) = session_pair();
        let now = Instant::now();
        let mut flow = FlowState::new(FlowConfig::default(), now);
        let (a, b) = (flow.add_subflow(now), flow.add_subflow(now));
        let mut rx = Receiver::default();
        let first = sealed(&c, 0, vec![data(0, b"once ")]);
        let second = sealed(&c, 1, vec![data(5, b"only")]);
        let deliver = |rx: &mut Receiver, flow: &mut FlowState, id, bytes: &BytesMut| {
            let opened = open(&s, split_record(&mut bytes.clone()).unwrap()).unwrap();
            rx.deliver(flow, id, opened, now).unwrap()
        };
        assert_eq!(deliver(&mut rx, &mut flow, a, &first), Delivery::Fresh);
        assert_eq!(deliver(&mut rx, &mut flow, b, &first), Delivery::Replayed);
        assert_eq!(deliver(&mut rx, &mut flow, a, &second), Delivery::Fresh);
        assert_eq!(deliver(&mut rx, &mut flow, a, &second), Delivery::Replayed);
        assert_eq!(deliver(&mut rx, &mut flow, a, &sealed(&c, 2, vec![Frame::Ping { id: 1 }])), Delivery::Fresh);
        let mut buf = [0u8; 64];
        let got = match flow.read(&mut buf).unwrap() {
            ReadOutcome::Data(n) => &buf[..n],
            other => panic!("{other:?}"),
        };
        assert_eq!(got, b"once only");
    }

    /// Packet numbers end at PN_LIMIT for both ends: no key exists beyond it, so a record
    /// claiming such a number is forged (and counted), and one that got through would
    /// still not reach the flow.
    #[test]
    fn packet_numbers_at_the_limit_are_refused() {
        let (c, s) = session_pair();
        assert!(matches!(c.seal_record(PN_LIMIT, &mut [0u8; 40]), Err(RecordError::PacketNumberTooLarge(PN_LIMIT))));
        let mut last = sealed(&c, PN_LIMIT - 1, vec![data(0, b"last")]);
        let mut beyond = last.clone();
        beyond[2..10].copy_from_slice(&PN_LIMIT.to_be_bytes());
        assert_eq!(open(&s, split_record(&mut beyond).unwrap()).unwrap_err(), OpenError::Forged);
        let mut wrapped = last.clone();
        wrapped[2..10].copy_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(open(&s, split_record(&mut wrapped).unwrap()).unwrap_err(), OpenError::Forged);
        assert_eq!(s.recv.forged(), 2);

        let now = Instant::now();
        let mut flow = FlowState::new(FlowConfig::default(), now);
        let id = flow.add_subflow(now);
        let mut rx = Receiver::default();
        let opened = open(&s, split_record(&mut last).unwrap()).unwrap();
        assert_eq!(rx.deliver(&mut flow, id, opened, now), Ok(Delivery::Fresh), "the last usable number is usable");
        let beyond = Opened { pn: PN_LIMIT, wire_len: 40, frames: vec![data(4, b"!")], retired: None, place: None };
        assert_eq!(rx.deliver(&mut flow, id, beyond, now), Ok(Delivery::Replayed));
        assert_eq!(flow.stats().bytes_received, 4);
    }

    /// Keys change every 2^N packet numbers with no exchange: records of several epochs,
    /// opened in any order and again, open; one sealed under another epoch's key does not.
    #[test]
    fn every_epoch_has_its_own_key_and_any_order_opens() {
        let secret = [7u8; 32];
        let keys = |bits| {
            let (c, s) = session_pair();
            let swap = |k: &SessionKeys, send: &[u8; 32], recv: &[u8; 32]| SessionKeys {
                send: RecordKeys::with_limits(send, bits, MAX_FORGED),
                recv: RecordKeys::with_limits(recv, bits, MAX_FORGED),
                flow_id: k.flow_id,
                join_key: k.join_key,
                remote_static: k.remote_static,
            };
            (swap(&c, &secret, &[8; 32]), swap(&s, &[8; 32], &secret))
        };
        let (c, s) = keys(2);
        let records: Vec<BytesMut> = (0..24).map(|pn| sealed(&c, pn, vec![Frame::Ping { id: pn }])).collect();
        // Descending, then every other one, then all again: epochs 5 down to 0 and back.
        for pn in (0..24).rev().chain((0..24).step_by(2)).chain(0..24) {
            let opened = open(&s, split_record(&mut records[pn].clone()).unwrap()).unwrap();
            assert_eq!(opened.pn, pn as u64);
        }
        assert_eq!(s.recv.forged(), 0);
        assert!(s.recv.cached_epochs().len() <= 3, "{:?}", s.recv.cached_epochs());
        // One key for every number (as before epochs): the same as ours in epoch 0, the
        // wrong key for the same number in any other epoch.
        let (flat, _) = keys(62);
        let opened = open(&s, split_record(&mut sealed(&flat, 1, vec![Frame::Ping { id: 1 }])).unwrap());
        assert_eq!(opened.unwrap().pn, 1);
        for pn in [4, 5, 23] {
            let mut wrong_key = sealed(&flat, pn, vec![Frame::Ping { id: pn }]);
            assert_eq!(open(&s, split_record(&mut wrong_key).unwrap()).unwrap_err(), OpenError::Forged);
        }
        assert_eq!(s.recv.forged(), 3);
    }

    /// Forged records are counted for the whole flow; at the limit its keys are
    /// retired and the next record that arrives ends the flow with a typed error.
    #[test]
    fn the_flow_ends_once_too_many_records_are_forged() {
        let (c0, s0) = session_pair();
        let limits = |k: &SessionKeys, send, recv| SessionKeys {
            send: RecordKeys::with_limits(send, EPOCH_BITS, 3),
            recv: RecordKeys::with_limits(recv, EPOCH_BITS, 3),
            flow_id: k.flow_id,
            join_key: k.join_key,
            remote_static: k.remote_static,
        };
        let (c, s) = (limits(&c0, &[1; 32], &[2; 32]), limits(&s0, &[2; 32], &[1; 32]));
        let now = Instant::now();
        let mut flow = FlowState::new(FlowConfig::default(), now);
        let id = flow.add_subflow(now);
        let mut rx = Receiver::default();
        let mut pn = 0;
        let mut record = |frames| {
            pn += 1;
            sealed(&c, pn, frames)
        };
        for _ in 0..3 {
            let opened = open(&s, split_record(&mut record(vec![Frame::Ping { id: 0 }])).unwrap()).unwrap();
            assert_eq!(rx.deliver(&mut flow, id, opened, now), Ok(Delivery::Fresh));
            let mut forged = record(vec![Frame::Ping { id: 0 }]);
            forged[RECORD_HEADER_LEN] ^= 1;
            assert_eq!(open(&s, split_record(&mut forged).unwrap()).unwrap_err(), OpenError::Forged);
        }
        assert_eq!(flow.status(), FlowStatus::Open, "forgeries alone only cost subflows");
        // An authentic record now opens nothing: the keys are retired, and the flow ends.
        let opened = open(&s, split_record(&mut record(vec![data(0, b"late")])).unwrap()).unwrap();
        assert!(opened.frames.is_empty());
        assert_eq!(rx.deliver(&mut flow, id, opened, now), Ok(Delivery::Replayed));
        assert_eq!(flow.status(), FlowStatus::Failed(FlowError::ForgedRecords { count: 3 }));
        assert_eq!(flow.stats().bytes_received, 0);
    }

    #[test]
    fn what_the_packer_seals_the_reader_opens() {
        let (c, s) = session_pair();
        let now = Instant::now();
        let mut tx = FlowState::new(FlowConfig::default(), now);
        let tx_sub = tx.add_subflow(now);
        let message: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
        tx.write(&message).unwrap();
        tx.finish().unwrap();
        let mut rx = FlowState::new(FlowConfig::default(), now);
        let rx_sub = rx.add_subflow(now);
        let mut receiver = Receiver::default();
        let (mut packer, mut pns) = (Packer::default(), PacketNumbers::default());
        let mut wire = BytesMut::new();
        let limit = BatchLimit { records: usize::MAX, bytes: usize::MAX };
        packer.pack(&mut tx, tx_sub, now, &mut pns, limit).seal_into(&c, &mut wire).unwrap();
        // Delivered in odd slices, as a socket would.
        let mut buf = BytesMut::new();
        for piece in wire.chunks(1000 + 7) {
            buf.extend_from_slice(piece);
            while let Some(rec) = split_record(&mut buf) {
                let opened = open(&s, rec).unwrap();
                assert_eq!(receiver.deliver(&mut rx, rx_sub, opened, now), Ok(Delivery::Fresh));
            }
        }
        let mut got = Vec::new();
        let mut chunk = [0u8; 65536];
        while let Ok(ReadOutcome::Data(n)) = rx.read(&mut chunk) {
            got.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(got.len(), message.len().min(crate::proto::INITIAL_WINDOW as usize));
        assert_eq!(got, message[..got.len()]);
    }
}
