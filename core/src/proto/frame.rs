//! Frames: the unit the flow protocol speaks on a subflow.
//!
//! The runtime seals records (one record = one or more frames back to back) and hands the
//! plaintext to [`Frame::decode_all`]. Everything here reads untrusted bytes, so every
//! length and count is bounded *before* anything is allocated, and every malformed input is
//! a [`FrameError`], never a panic. DATA payloads are zero-copy slices of the record.
//!
//! Wire format (all integers big-endian):
//!
//! | type | frame | fields |
//! |------|-------|--------|
//! | 0x01 | DATA  | flags u8 (bit 0 = FIN, others 0), offset u64, len u16 (≤ [`MAX_DATA_LEN`]), payload |
//! | 0x02 | ACK   | cum u64, window u64, n u8 (≤ [`MAX_ACK_RANGES`]), n × (start u64, end u64) |
//! | 0x03 | PING  | id u64 |
//! | 0x04 | PONG  | id u64 |
//! | 0x05 | ADDRS | n u8 (≤ [`MAX_ADDRS`]), n × addr, m u8 (≤ [`MAX_RELAYS`]), m × (len u16 ≤ [`MAX_RELAY_LEN`], UTF-8) |
//! | 0x06 | CLOSE | code u16, len u16 (≤ [`MAX_REASON_LEN`]), UTF-8 reason |
//! | 0x07 | ABANDON | token u64 |
//! | 0x08 | STANDBY | flag u8 (0 or 1) |
//! | 0x09 | POLICY | policy u8 (0 backup, 1 performance, 2 energy, 3 redundant) |
//! | 0x0a | DEMAND | overflow u8 (0 or 1) |
//! | 0x0b | PUNCH | from addr, to addr |
//!
//! An addr is family u8 (4 or 6), 4 or 16 address bytes, port u16. Offsets count stream
//! units: each payload byte is one unit and the FIN is one more unit just past the last
//! byte. No offset or ACK value may exceed [`MAX_OFFSET`], so arithmetic never overflows.

use std::net::SocketAddr;
use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use super::PathPolicy;
use crate::wire::{put_short_bytes, put_socket_addr, DecodeError, Reader};

/// Hard bound of a DATA payload on the wire.
pub const MAX_DATA_LEN: usize = 65_000;
/// Most SACK ranges one ACK carries.
pub const MAX_ACK_RANGES: usize = 32;
/// Most addresses in one ADDRS frame.
pub const MAX_ADDRS: usize = 16;
/// Most relay names in one ADDRS frame.
pub const MAX_RELAYS: usize = 8;
/// Longest relay name in bytes.
pub const MAX_RELAY_LEN: usize = 255;
/// Longest CLOSE reason in bytes.
pub const MAX_REASON_LEN: usize = 1024;
/// Largest stream offset (and ACK value) the protocol allows: 2^62.
pub const MAX_OFFSET: u64 = 1 << 62;

/// Bytes of a DATA frame before its payload.
pub const DATA_HEADER_LEN: usize = 1 + 1 + 8 + 2;
/// Bytes of an ACK frame without ranges.
pub const ACK_HEADER_LEN: usize = 1 + 8 + 8 + 1;
/// Bytes of one ACK range.
pub const ACK_RANGE_LEN: usize = 16;

const T_DATA: u8 = 0x01;
const T_ACK: u8 = 0x02;
const T_PING: u8 = 0x03;
const T_PONG: u8 = 0x04;
const T_ADDRS: u8 = 0x05;
const T_CLOSE: u8 = 0x06;
const T_ABANDON: u8 = 0x07;
const T_STANDBY: u8 = 0x08;
const T_POLICY: u8 = 0x09;
const T_DEMAND: u8 = 0x0a;
const T_PUNCH: u8 = 0x0b;
const FLAG_FIN: u8 = 0x01;

/// CLOSE code: the peer's application aborted the flow.
pub const CLOSE_APPLICATION: u16 = 1;
/// CLOSE code: the peer's endpoint did not take the flow (nobody accepting on the name,
/// or its queue of flows waiting to be accepted was full).
pub const CLOSE_NOT_ACCEPTED: u16 = 2;

/// One protocol frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Stream bytes at `offset`; `fin` marks `offset + payload.len()` as the end of the stream.
    Data {
        offset: u64,
        fin: bool,
        payload: Bytes,
    },
    /// `cum`: every unit below is received; `ranges`: units received beyond `cum` (ascending,
    /// disjoint, not touching `cum` or each other, ≤ [`MAX_ACK_RANGES`]); `window`: the peer
    /// may send payload bytes at offsets `< window`.
    Ack {
        cum: u64,
        ranges: Vec<Range<u64>>,
        window: u64,
    },
    /// Asks for a PONG with the same id.
    Ping { id: u64 },
    /// Answers a PING.
    Pong { id: u64 },
    /// A peer that moved tells its new addresses and relays.
    Addrs {
        addrs: Vec<SocketAddr>,
        relays: Vec<String>,
    },
    /// Aborts the flow ([`CLOSE_APPLICATION`] or [`CLOSE_NOT_ACCEPTED`]).
    Close { code: u16, reason: String },
    /// The sender lost the subflow with this token (its address vanished, or it stopped
    /// answering): the receiver retires its end of it at once instead of waiting for the
    /// dead-path timeout, and re-sends what was in flight there.
    Abandon { token: u64 },
    /// The sender wants this subflow kept as a standby (`true`): both ends send DATA on
    /// it only while no active subflow is heard. `false` makes it active again.
    Standby { standby: bool },
    /// The sender (the connecting end) switched the flow's scheduling policy; the
    /// receiver schedules its own sending the same way.
    Policy { policy: PathPolicy },
    /// Under the `Energy` policy: the sender's active paths cannot keep up with what its
    /// application writes (`true`), or can again (`false`). The connecting end opens or
    /// retires its extra (cellular) subflows on it.
    Demand { overflow: bool },
    /// The connecting end, on a relayed path, dials `to` (the other end's address as the
    /// relay saw it) from `from` (its own, as the relay saw it) right now: the receiver
    /// dials `from` from the local end of its relayed path with that address, so that
    /// the two SYNs cross in the NATs (TCP simultaneous open).
    Punch { from: SocketAddr, to: SocketAddr },
}

/// Why a record could not be decoded into frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The record holds no frame at all.
    #[error("empty record")]
    EmptyRecord,
    /// The type byte names no frame this version knows.
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    /// DATA flags other than FIN are set.
    #[error("reserved DATA flags set: {0:#04x}")]
    ReservedFlags(u8),
    /// A STANDBY or DEMAND flag is neither 0 nor 1.
    #[error("{frame} flag {value} is neither 0 nor 1")]
    BadFlag {
        /// The frame's name.
        frame: &'static str,
        /// The flag's value.
        value: u8,
    },
    /// A POLICY frame names no known policy.
    #[error("POLICY {0} names no known policy")]
    UnknownPolicy(u8),
    /// A field is truncated, over its bound or malformed.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// An offset or ACK value is over the protocol's maximum (2^62).
    #[error("offset over the protocol maximum")]
    OffsetTooLarge,
    /// ACK ranges are empty, unordered, overlapping, touching, or not beyond `cum`.
    #[error("malformed ACK ranges")]
    BadAckRanges,
}

/// Checks the ACK range invariants; shared by the decoder and the state machine (which
/// may be handed frames that never went through the decoder).
pub(crate) fn check_ack(cum: u64, ranges: &[Range<u64>], window: u64) -> Result<(), FrameError> {
    if cum > MAX_OFFSET || window > MAX_OFFSET {
        return Err(FrameError::OffsetTooLarge);
    }
    if ranges.len() > MAX_ACK_RANGES {
        return Err(FrameError::Decode(DecodeError::TooLong("ACK ranges")));
    }
    let mut prev_end = cum;
    for r in ranges {
        if r.end > MAX_OFFSET {
            return Err(FrameError::OffsetTooLarge);
        }
        if r.start <= prev_end || r.end <= r.start {
            return Err(FrameError::BadAckRanges);
        }
        prev_end = r.end;
    }
    Ok(())
}

/// Longest prefix of `s` that is at most `max` bytes and ends on a char boundary.
pub(crate) fn clamp_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A one-byte boolean of a STANDBY or DEMAND frame.
fn flag(r: &mut Reader<'_>, frame: &'static str) -> Result<bool, FrameError> {
    match r.u8(frame)? {
        0 => Ok(false),
        1 => Ok(true),
        value => Err(FrameError::BadFlag { frame, value }),
    }
}

fn relays_within_bounds(relays: &[String]) -> impl Iterator<Item = &String> {
    relays
        .iter()
        .filter(|r| r.len() <= MAX_RELAY_LEN)
        .take(MAX_RELAYS)
}

impl Frame {
    /// Appends the encoding of this frame to `out`.
    ///
    /// Encoding never fails. Fields over their bound are clamped the same way
    /// [`Frame::encoded_len`] counts them: ADDRS keeps the first [`MAX_ADDRS`] addresses
    /// and the first [`MAX_RELAYS`] relay names no longer than [`MAX_RELAY_LEN`], CLOSE
    /// keeps a [`MAX_REASON_LEN`] prefix of its reason, and ACK keeps the first
    /// [`MAX_ACK_RANGES`] ranges. A DATA payload over [`MAX_DATA_LEN`] is a caller bug
    /// (the state machine never builds one); it is truncated.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(self.encoded_len());
        match self {
            Frame::Data {
                offset,
                fin,
                payload,
            } => {
                debug_assert!(payload.len() <= MAX_DATA_LEN);
                let payload = &payload[..payload.len().min(MAX_DATA_LEN)];
                out.put_u8(T_DATA);
                out.put_u8(if *fin { FLAG_FIN } else { 0 });
                out.put_u64(*offset);
                out.put_u16(payload.len() as u16);
                out.put_slice(payload);
            }
            Frame::Ack {
                cum,
                ranges,
                window,
            } => {
                let ranges = &ranges[..ranges.len().min(MAX_ACK_RANGES)];
                out.put_u8(T_ACK);
                out.put_u64(*cum);
                out.put_u64(*window);
                out.put_u8(ranges.len() as u8);
                for r in ranges {
                    out.put_u64(r.start);
                    out.put_u64(r.end);
                }
            }
            Frame::Ping { id } => {
                out.put_u8(T_PING);
                out.put_u64(*id);
            }
            Frame::Pong { id } => {
                out.put_u8(T_PONG);
                out.put_u64(*id);
            }
            Frame::Addrs { addrs, relays } => {
                let addrs = &addrs[..addrs.len().min(MAX_ADDRS)];
                out.put_u8(T_ADDRS);
                out.put_u8(addrs.len() as u8);
                for a in addrs {
                    put_socket_addr(out, a);
                }
                out.put_u8(relays_within_bounds(relays).count() as u8);
                for r in relays_within_bounds(relays) {
                    put_short_bytes(out, r.as_bytes());
                }
            }
            Frame::Close { code, reason } => {
                out.put_u8(T_CLOSE);
                out.put_u16(*code);
                put_short_bytes(out, clamp_str(reason, MAX_REASON_LEN).as_bytes());
            }
            Frame::Abandon { token } => {
                out.put_u8(T_ABANDON);
                out.put_u64(*token);
            }
            Frame::Standby { standby } => {
                out.put_u8(T_STANDBY);
                out.put_u8(u8::from(*standby));
            }
            Frame::Policy { policy } => {
                out.put_u8(T_POLICY);
                out.put_u8(policy.to_wire());
            }
            Frame::Demand { overflow } => {
                out.put_u8(T_DEMAND);
                out.put_u8(u8::from(*overflow));
            }
            Frame::Punch { from, to } => {
                out.put_u8(T_PUNCH);
                put_socket_addr(out, from);
                put_socket_addr(out, to);
            }
        }
    }

    /// Length of [`Frame::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        match self {
            Frame::Data { payload, .. } => DATA_HEADER_LEN + payload.len().min(MAX_DATA_LEN),
            Frame::Ack { ranges, .. } => {
                ACK_HEADER_LEN + ACK_RANGE_LEN * ranges.len().min(MAX_ACK_RANGES)
            }
            Frame::Ping { .. } | Frame::Pong { .. } | Frame::Abandon { .. } => 9,
            Frame::Standby { .. } | Frame::Policy { .. } | Frame::Demand { .. } => 2,
            Frame::Addrs { addrs, relays } => {
                let a: usize = addrs
                    .iter()
                    .take(MAX_ADDRS)
                    .map(|a| if a.is_ipv4() { 7 } else { 19 })
                    .sum();
                let r: usize = relays_within_bounds(relays).map(|r| 2 + r.len()).sum();
                3 + a + r
            }
            Frame::Close { reason, .. } => 5 + clamp_str(reason, MAX_REASON_LEN).len(),
            Frame::Punch { from, to } => 1 + [from, to].iter().map(|a| if a.is_ipv4() { 7 } else { 19 }).sum::<usize>(),
        }
    }

    /// Decodes one record: one or more frames back to back, nothing left over.
    pub fn decode_all(buf: Bytes) -> Result<Vec<Frame>, FrameError> {
        let mut frames = Vec::new();
        let mut r = Reader::new(&buf);
        if r.is_empty() {
            return Err(FrameError::EmptyRecord);
        }
        while !r.is_empty() {
            let frame = match r.u8("frame type")? {
                T_DATA => {
                    let flags = r.u8("DATA flags")?;
                    if flags & !FLAG_FIN != 0 {
                        return Err(FrameError::ReservedFlags(flags));
                    }
                    let offset = r.u64("DATA offset")?;
                    let len = r.u16("DATA length")? as usize;
                    if len > MAX_DATA_LEN {
                        return Err(DecodeError::TooLong("DATA payload").into());
                    }
                    let fin = flags & FLAG_FIN != 0;
                    if offset > MAX_OFFSET || offset + len as u64 + fin as u64 > MAX_OFFSET {
                        return Err(FrameError::OffsetTooLarge);
                    }
                    let start = buf.len() - r.remaining();
                    r.bytes(len, "DATA payload")?;
                    Frame::Data {
                        offset,
                        fin,
                        payload: buf.slice(start..start + len),
                    }
                }
                T_ACK => {
                    let cum = r.u64("ACK cum")?;
                    let window = r.u64("ACK window")?;
                    let n = r.u8("ACK range count")? as usize;
                    if n > MAX_ACK_RANGES {
                        return Err(DecodeError::TooLong("ACK ranges").into());
                    }
                    let mut ranges = Vec::with_capacity(n);
                    for _ in 0..n {
                        ranges.push(r.u64("ACK range start")?..r.u64("ACK range end")?);
                    }
                    check_ack(cum, &ranges, window)?;
                    Frame::Ack {
                        cum,
                        ranges,
                        window,
                    }
                }
                T_PING => Frame::Ping {
                    id: r.u64("PING id")?,
                },
                T_PONG => Frame::Pong {
                    id: r.u64("PONG id")?,
                },
                T_ADDRS => {
                    let n = r.u8("address count")? as usize;
                    if n > MAX_ADDRS {
                        return Err(DecodeError::TooLong("address list").into());
                    }
                    let mut addrs = Vec::with_capacity(n);
                    for _ in 0..n {
                        addrs.push(r.socket_addr()?);
                    }
                    let m = r.u8("relay count")? as usize;
                    if m > MAX_RELAYS {
                        return Err(DecodeError::TooLong("relay list").into());
                    }
                    let mut relays = Vec::with_capacity(m);
                    for _ in 0..m {
                        relays.push(r.short_str(MAX_RELAY_LEN, "relay name")?.to_owned());
                    }
                    Frame::Addrs { addrs, relays }
                }
                T_CLOSE => {
                    let code = r.u16("CLOSE code")?;
                    let reason = r.short_str(MAX_REASON_LEN, "CLOSE reason")?.to_owned();
                    Frame::Close { code, reason }
                }
                T_ABANDON => Frame::Abandon { token: r.u64("ABANDON token")? },
                T_STANDBY => Frame::Standby { standby: flag(&mut r, "STANDBY")? },
                T_DEMAND => Frame::Demand { overflow: flag(&mut r, "DEMAND")? },
                T_PUNCH => Frame::Punch { from: r.socket_addr()?, to: r.socket_addr()? },
                T_POLICY => {
                    let v = r.u8("POLICY")?;
                    Frame::Policy { policy: PathPolicy::from_wire(v).ok_or(FrameError::UnknownPolicy(v))? }
                }
                t => return Err(FrameError::UnknownType(t)),
            };
            frames.push(frame);
        }
        Ok(frames)
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)] // one-range ACKs are the point
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn samples() -> Vec<Frame> {
        vec![
            Frame::Data {
                offset: 0,
                fin: false,
                payload: Bytes::from_static(b"hello"),
            },
            Frame::Data {
                offset: 77,
                fin: true,
                payload: Bytes::new(),
            },
            Frame::Data {
                offset: 1 << 40,
                fin: true,
                payload: Bytes::from(vec![7; MAX_DATA_LEN]),
            },
            Frame::Ack {
                cum: 0,
                ranges: vec![],
                window: 65536,
            },
            Frame::Ack {
                cum: 10,
                ranges: vec![12..14, 20..21],
                window: 1 << 30,
            },
            Frame::Ping { id: 0 },
            Frame::Pong { id: u64::MAX },
            Frame::Abandon { token: 7 },
            Frame::Standby { standby: true },
            Frame::Standby { standby: false },
            Frame::Policy { policy: PathPolicy::Energy },
            Frame::Policy { policy: PathPolicy::Redundant },
            Frame::Punch { from: "192.0.2.1:4000".parse().unwrap(), to: "[2001:db8::1]:443".parse().unwrap() },
            Frame::Demand { overflow: true },
            Frame::Demand { overflow: false },
            Frame::Addrs {
                addrs: vec![
                    "10.0.0.1:7450".parse().unwrap(),
                    "[2001:db8::1]:443".parse().unwrap(),
                ],
                relays: vec!["relay.example".into(), "ü".into()],
            },
            Frame::Addrs {
                addrs: vec![],
                relays: vec![],
            },
            Frame::Close {
                code: 3,
                reason: "bye 👋".into(),
            },
            Frame::Close {
                code: 0,
                reason: String::new(),
            },
        ]
    }

    fn encode(frames: &[Frame]) -> Bytes {
        let mut out = BytesMut::new();
        for f in frames {
            let before = out.len();
            f.encode(&mut out);
            assert_eq!(out.len() - before, f.encoded_len(), "{f:?}");
        }
        out.freeze()
    }

    #[test]
    fn every_variant_round_trips_alone_and_together() {
        let all = samples();
        for f in &all {
            assert_eq!(
                Frame::decode_all(encode(std::slice::from_ref(f))).unwrap(),
                vec![f.clone()]
            );
        }
        assert_eq!(Frame::decode_all(encode(&all)).unwrap(), all);
    }

    #[test]
    fn data_payload_is_a_slice_of_the_record() {
        let rec = encode(&[Frame::Data {
            offset: 5,
            fin: false,
            payload: Bytes::from_static(b"abc"),
        }]);
        let frames = Frame::decode_all(rec.clone()).unwrap();
        let Frame::Data { payload, .. } = &frames[0] else {
            panic!()
        };
        assert_eq!(payload.as_ptr(), rec[DATA_HEADER_LEN..].as_ptr());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let all = encode(&samples());
        // Cutting inside any frame must fail; cutting at a frame boundary must not.
        let mut boundaries = vec![0];
        let mut at = 0;
        for f in samples() {
            at += f.encoded_len();
            boundaries.push(at);
        }
        for cut in 1..all.len() {
            let res = Frame::decode_all(all.slice(..cut));
            assert_eq!(res.is_ok(), boundaries.contains(&cut), "cut at {cut}");
        }
        assert_eq!(
            Frame::decode_all(Bytes::new()),
            Err(FrameError::EmptyRecord)
        );
    }

    #[test]
    fn bad_inputs_are_named() {
        let dec = |v: Vec<u8>| Frame::decode_all(Bytes::from(v));
        assert_eq!(dec(vec![0x7f]), Err(FrameError::UnknownType(0x7f)));
        assert_eq!(
            dec(vec![T_DATA, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(FrameError::ReservedFlags(2))
        );
        let mut over = vec![T_DATA, 0];
        over.extend_from_slice(&0u64.to_be_bytes());
        over.extend_from_slice(&65_001u16.to_be_bytes());
        over.extend(std::iter::repeat_n(0, 65_001));
        assert_eq!(dec(over), Err(DecodeError::TooLong("DATA payload").into()));
        let mut huge = vec![T_DATA, 0];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        huge.extend_from_slice(&0u16.to_be_bytes());
        assert_eq!(dec(huge), Err(FrameError::OffsetTooLarge));
        let ack = |cum: u64, ranges: Vec<Range<u64>>| {
            let mut out = BytesMut::new();
            Frame::Ack {
                cum,
                ranges,
                window: 1,
            }
            .encode(&mut out);
            Frame::decode_all(out.freeze())
        };
        assert_eq!(ack(10, vec![10..12]), Err(FrameError::BadAckRanges));
        assert_eq!(ack(10, vec![12..12]), Err(FrameError::BadAckRanges));
        assert_eq!(ack(10, vec![14..16, 12..13]), Err(FrameError::BadAckRanges));
        assert_eq!(ack(10, vec![12..14, 14..16]), Err(FrameError::BadAckRanges));
        let mut many = vec![T_ACK];
        many.extend_from_slice(&[0; 16]);
        many.push(33);
        assert_eq!(dec(many), Err(DecodeError::TooLong("ACK ranges").into()));
        let mut bad_utf8 = vec![T_CLOSE, 0, 1, 0, 2, 0xff, 0xfe];
        assert_eq!(
            dec(bad_utf8.clone()),
            Err(DecodeError::Invalid("CLOSE reason").into())
        );
        bad_utf8.truncate(3);
        assert!(dec(bad_utf8).is_err());
        assert_eq!(
            dec(vec![T_ADDRS, 17]),
            Err(DecodeError::TooLong("address list").into())
        );
        assert_eq!(
            dec(vec![T_ADDRS, 0, 9]),
            Err(DecodeError::TooLong("relay list").into())
        );
    }

    #[test]
    fn encoder_clamps_over_bound_fields() {
        let f = Frame::Close {
            code: 1,
            reason: "é".repeat(600),
        };
        let Frame::Close { reason, .. } = &Frame::decode_all(encode(&[f])).unwrap()[0] else {
            panic!()
        };
        assert_eq!(reason.len(), 1024);
        let f = Frame::Addrs {
            addrs: vec!["1.2.3.4:5".parse().unwrap(); 20],
            relays: vec!["x".repeat(300), "ok".into()],
        };
        let got = Frame::decode_all(encode(&[f])).unwrap();
        assert_eq!(
            got,
            vec![Frame::Addrs {
                addrs: vec!["1.2.3.4:5".parse().unwrap(); 16],
                relays: vec!["ok".into()]
            }]
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Frame::decode_all(Bytes::from(data));
        }

        #[test]
        fn mutated_records_never_panic(idx in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
            let mut rec = encode(&samples()).to_vec();
            let i = idx.index(rec.len());
            rec[i] = byte;
            rec.truncate(cut.index(rec.len()) + 1);
            let _ = Frame::decode_all(Bytes::from(rec));
        }
    }
}
