//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`; no part of the API).
//!
//! Each one is a thin wrapper over a decoder or state machine that is private to the
//! crate, taking and returning plain values, so a target can feed it arbitrary bytes and
//! check its invariants. Keys and identities are fixed, so seeds written once (valid
//! handshake messages, JOINs, sealed records) stay valid for every run.

use std::fmt::Debug;
use std::sync::OnceLock;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::identity::Identity;
use crate::session::join::{self, JoinRefusal};
use crate::session::opening::{self, Admitted, ExpectedJoins, JoinSent, JoinTarget, JoinsSeen, Opening, Progress};
use crate::session::records::{self, Delivery, OpenError, Receiver, RecordKeys};
use crate::session::{FlowId, HandshakeError, Initiator, Responder, SessionKeys, MAX_HANDSHAKE_MSG};

pub use crate::name::protocol::{Request, Response};
pub use crate::name::SignedRecord;

use crate::proto::{FlowConfig, FlowEvent, FlowState, Frame, PathPolicy, ReadOutcome, SubflowId};

// ---- subflow opening ----

/// What an incremental decoder made of the bytes so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The first `n` bytes are needed before it can say.
    Need(usize),
    /// Done: the value or the error, as `Debug` renders it.
    Done(String),
}

fn step<T: Debug>(p: Progress<T>) -> Step {
    match p {
        Progress::Need(n) => Step::Need(n),
        Progress::Done(v) => Step::Done(format!("{v:?}")),
    }
}

fn step_or_error<T: Debug, E: Debug>(r: Result<Progress<T>, E>) -> Step {
    r.map_or_else(|e| Step::Done(format!("{e:?}")), step)
}

/// Most bytes a client's opening may take: the header and the longest handshake message.
pub const MAX_OPENING: usize = 6 + 2 + MAX_HANDSHAKE_MSG;
/// Most bytes the answer to NEW_FLOW may take.
pub const MAX_NEW_FLOW_ANSWER: usize = 2 + MAX_HANDSHAKE_MSG;
/// Most bytes the answer to a JOIN may take: a refusal with the longest reason and a
/// signature.
pub const MAX_JOIN_ANSWER: usize = 2 + 255 + 64;

const JOIN_KEY: [u8; 32] = [3; 32];
const FLOW: FlowId = FlowId([8; 16]);
/// The sequence number of the JOIN whose answer [`decode_join_answer`] reads.
pub const JOIN_SEQ: u64 = 9;

fn identity(seed: u8) -> &'static Identity {
    static IDS: OnceLock<[Identity; 3]> = OnceLock::new();
    &IDS.get_or_init(|| [1, 2, 3].map(|s| Identity::from_seed([s; 32])))[usize::from(seed - 1)]
}

/// The listener's decoder of what opens a subflow.
pub fn decode_opening(buf: &[u8]) -> Step {
    step_or_error(opening::decode_opening(buf))
}

/// The client's decoder of the answer to NEW_FLOW.
pub fn decode_new_flow_answer(buf: &[u8]) -> Step {
    step_or_error(opening::decode_new_flow_answer(buf))
}

/// The client's decoder of the answer to its JOIN number [`JOIN_SEQ`] (fixed join key; the
/// peer is identity 2).
pub fn decode_join_answer(buf: &[u8]) -> Step {
    let peer = identity(2).public().signing;
    let id = join::join_id(&JOIN_KEY, JOIN_SEQ);
    let sent = JoinSent { join_key: &JOIN_KEY, id: &id, seq: JOIN_SEQ, peer_signing_key: Some(&peer) };
    step(opening::decode_join_answer(buf, &sent))
}

/// A NEW_FLOW opening carrying `msg1`.
pub fn new_flow_opening(msg1: &[u8]) -> Vec<u8> {
    opening::new_flow(msg1)
}

/// The answer to NEW_FLOW carrying `msg2`.
pub fn new_flow_answer(msg2: &[u8]) -> Vec<u8> {
    opening::handshake_message(&[], msg2)
}

/// A JOIN opening of the fixed flow, to identity 2.
pub fn join_opening(seq: u64, resume: u64) -> Vec<u8> {
    opening::join_request(&JOIN_KEY, &identity(2).public().noise, seq, resume)
}

/// The answer accepting JOIN number [`JOIN_SEQ`].
pub fn join_accept(fast_open: bool) -> Vec<u8> {
    opening::join_accept(&JOIN_KEY, &join::join_id(&JOIN_KEY, JOIN_SEQ), JOIN_SEQ, fast_open)
}

/// The answer refusing JOIN number [`JOIN_SEQ`] with `code` (1–3), signed by the peer or
/// by a stranger.
pub fn join_refuse(code: u8, by_peer: bool) -> Vec<u8> {
    let why = JoinRefusal::from_code(code).unwrap_or(JoinRefusal::BadMac);
    let id = join::join_id(&JOIN_KEY, JOIN_SEQ);
    opening::join_refuse(why, identity(if by_peer { 2 } else { 3 }), &id, JOIN_SEQ)
}

// ---- handshake ----

/// How a handshake ended for the side that read the last message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// A session: both ends hold its keys.
    Session,
    /// The responder refused (it does not serve the name, or not for this key, or not now).
    Refused,
    /// Noise refused the message.
    Noise,
    /// The message's payload is malformed.
    Payload,
}

fn finish(e: HandshakeError) -> Finish {
    match e {
        HandshakeError::Noise(_) => Finish::Noise,
        HandshakeError::Payload => Finish::Payload,
        _ => Finish::Refused,
    }
}

/// The timestamp of the fixed initiator's handshakes.
const TIMESTAMP: u64 = 7;

/// The first handshake message from identity 1 to identity 2, asking for `name`.
pub fn first_message(name: &str) -> Vec<u8> {
    Initiator::start(identity(1), &identity(2).public().noise, name, TIMESTAMP).expect("a name of at most 255 bytes").1
}

/// Identity 2 reads `msg` as a first handshake message; a message it takes is accepted
/// (which must work). Returns the name asked for.
pub fn respond(msg: &[u8]) -> Result<String, Finish> {
    let responder = Responder::read(identity(2), msg).map_err(finish)?;
    let name = responder.name.clone();
    responder.accept().expect("an accepted first message can be answered");
    Ok(name)
}

/// Identity 1 starts a handshake to identity 2 and reads `reply` as the answer.
pub fn initiate(reply: &[u8]) -> Finish {
    let (initiator, _) = Initiator::start(identity(1), &identity(2).public().noise, "svc", TIMESTAMP).expect("handshake starts");
    initiator.finish(reply).map_or_else(finish, |_| Finish::Session)
}

/// A whole handshake between identities 1 and 2, where `edit` changes the responder's
/// reply on the way.
pub fn handshake_with_edited_reply(edit: impl FnOnce(&mut Vec<u8>)) -> Finish {
    let (initiator, msg1) = Initiator::start(identity(1), &identity(2).public().noise, "svc", TIMESTAMP).expect("handshake starts");
    let (mut reply, _) = Responder::read(identity(2), &msg1).expect("a valid first message").accept().expect("accepted");
    edit(&mut reply);
    initiator.finish(&reply).map_or_else(finish, |_| Finish::Session)
}

// ---- JOIN admission ----

/// What a listener decided about a JOIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinVerdict {
    /// Its `mac1` is wrong: no answer at all.
    NoAnswer,
    /// Admitted, the first with its sequence number.
    First,
    /// Admitted as a copy of an admitted JOIN.
    Copy,
    /// Refused with this code.
    Refused(u8),
}

/// A listener (identity 2) with a table of flows, each with its join key and the JOINs
/// it admitted, found by the identifiers of the JOINs it expects, as the endpoint does.
pub struct JoinTable {
    flows: Vec<(FlowId, [u8; 32], JoinsSeen)>,
    expected: ExpectedJoins,
}

impl Default for JoinTable {
    fn default() -> Self {
        let flows = vec![(FLOW, JOIN_KEY, JoinsSeen::new()), (FlowId([9; 16]), [5; 32], JoinsSeen::new())];
        let mut expected = ExpectedJoins::default();
        for (id, key, _) in &flows {
            expected.expect(*id, key, 0);
        }
        JoinTable { flows, expected }
    }
}

impl JoinTable {
    /// How many flows the table holds.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Never: the table is fixed.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// A valid JOIN opening for the table's flow `flow`.
    pub fn request(&self, flow: usize, seq: u64, resume: u64) -> Vec<u8> {
        opening::join_request(&self.flows[flow].1, &identity(2).public().noise, seq, resume)
    }

    /// Decodes `bytes` as an opening and, when it is a whole JOIN, decides about it.
    /// `None` when `bytes` hold no whole JOIN.
    pub fn admit(&mut self, bytes: &[u8]) -> Option<JoinVerdict> {
        let Ok(Progress::Done(Opening::Join(request))) = opening::decode_opening(bytes) else {
            return None;
        };
        if !request.verify_mac1(&identity(2).public().noise) {
            return Some(JoinVerdict::NoAnswer);
        }
        let flow = self.expected.flow(&request.id, request.seq);
        let entry = self.flows.iter_mut().find(|(id, _, _)| Some(*id) == flow);
        let target = entry.map(|(_, key, joins)| JoinTarget { join_key: key, joins });
        Some(match opening::admit_join(&request, target) {
            Ok(Admitted::First) => {
                let (id, key, _) = self.flows.iter().find(|(id, _, _)| Some(*id) == flow).expect("admitted to a flow");
                self.expected.expect(*id, key, request.seq);
                JoinVerdict::First
            }
            Ok(Admitted::Copy) => JoinVerdict::Copy,
            Err(why) => JoinVerdict::Refused(why as u8),
        })
    }
}

// ---- records ----

/// Session keys from fixed secrets: ours (`ours`), or the peer's, which seal what we open.
/// Each flow gets its own, as they count the forged records they refused.
fn session_keys(ours: bool) -> SessionKeys {
    let (send, recv) = if ours { ([1; 32], [2; 32]) } else { ([2; 32], [1; 32]) };
    SessionKeys { send: RecordKeys::new(&send), recv: RecordKeys::new(&recv), flow_id: FLOW, join_key: JOIN_KEY, remote_static: [0; 32] }
}

/// Clear bytes in front of every record's ciphertext.
pub const RECORD_HEADER_LEN: usize = records::RECORD_HEADER_LEN;

/// How many more bytes `buf` needs before its first record is whole.
pub fn bytes_wanted(buf: &[u8]) -> usize {
    records::bytes_wanted(buf)
}

/// A record as the peer seals it to us, with packet number `pn` (`None`: the plaintext is
/// over the limit).
pub fn seal(pn: u64, plaintext: &[u8]) -> Option<Vec<u8>> {
    let mut record = vec![0u8; RECORD_HEADER_LEN];
    record.extend_from_slice(plaintext);
    record.resize(record.len() + 16, 0);
    static PEER: OnceLock<SessionKeys> = OnceLock::new();
    PEER.get_or_init(|| session_keys(false)).seal_record(pn, &mut record).ok()?;
    Some(record)
}

/// Cuts the first record off `buf` once it is whole: its packet number and wire length.
pub fn split_record(buf: &mut BytesMut) -> Option<(u64, usize)> {
    let (len, pn) = (buf.len(), buf.get(2..10).map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes"))));
    records::split_record(buf).map(|_| (pn.expect("a whole record has a header"), len - buf.len()))
}

/// What became of one record a subflow read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// Its frames went to the flow.
    Fresh,
    /// Dropped as a replay.
    Replayed,
    /// Refused: not sealed with the flow's key for its number. The subflow is lost.
    Forged,
    /// Authentic, but its frames do not decode. The subflow is lost.
    Malformed(String),
    /// A frame broke the protocol. The subflow is lost.
    Violation(String),
}

/// A flow's state machine, its record receiver and one read buffer per subflow, driven
/// the way the runtime drives them, with the clock in the caller's hands. Subflows are
/// numbered by the flow.
pub struct FlowDriver {
    flow: FlowState,
    keys: SessionKeys,
    receiver: Receiver,
    /// What each live subflow read that is not yet a whole record.
    subflows: BTreeMap<u64, BytesMut>,
    now: Instant,
}

impl Default for FlowDriver {
    fn default() -> Self {
        let now = Instant::now();
        FlowDriver { flow: FlowState::new(FlowConfig::default(), now), keys: session_keys(true), receiver: Receiver::default(), subflows: BTreeMap::new(), now }
    }
}

impl FlowDriver {
    /// The live subflows.
    pub fn subflows(&self) -> Vec<u64> {
        self.subflows.keys().copied().collect()
    }

    /// Adds a subflow; `peer_speaks_first` as for one the peer opened.
    pub fn add_subflow(&mut self, peer_speaks_first: bool) -> u64 {
        let id = self.flow.add_subflow(self.now);
        if peer_speaks_first {
            self.flow.set_peer_speaks_first(id);
        }
        self.subflows.insert(id.0, BytesMut::new());
        self.settle();
        id.0
    }

    /// Loses subflow `id` (its socket failed).
    pub fn lose_subflow(&mut self, id: u64) {
        if self.subflows.remove(&id).is_some() {
            self.flow.remove_subflow(SubflowId(id), self.now);
        }
        self.settle();
    }

    /// Bytes subflow `id` holds that are not yet a whole record.
    pub fn pending(&self, id: u64) -> usize {
        self.subflows.get(&id).map_or(0, |b| b.len())
    }

    /// Subflow `id` read `bytes`: every record they complete is opened and handed to the
    /// flow. A record that loses the subflow ends it (what follows it is not read).
    pub fn receive(&mut self, id: u64, bytes: &[u8]) -> Vec<Read> {
        let Some(buf) = self.subflows.get_mut(&id) else { return Vec::new() };
        buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(sealed) = records::split_record(buf) {
            let read = match records::open(&self.keys, sealed) {
                Err(OpenError::Forged) => Read::Forged,
                Err(OpenError::Malformed(e)) => Read::Malformed(e.to_string()),
                Ok(opened) => match self.receiver.deliver(&mut self.flow, SubflowId(id), opened, self.now) {
                    Ok(Delivery::Fresh) => Read::Fresh,
                    Ok(Delivery::Replayed) => Read::Replayed,
                    Err(v) => Read::Violation(v.to_string()),
                },
            };
            let lost = !matches!(read, Read::Fresh | Read::Replayed);
            out.push(read);
            if lost {
                self.lose_subflow(id);
                break;
            }
        }
        self.settle();
        out
    }

    /// Lets `ms` milliseconds pass and fires the timers due.
    pub fn advance(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        self.flow.handle_timeout(self.now);
        self.settle();
    }

    /// Takes what subflow `id` sends with `room` bytes per frame, at most `frames` frames;
    /// returns the bytes taken. Each frame must fit and decode to itself.
    pub fn transmit(&mut self, id: u64, room: usize, frames: usize) -> usize {
        let mut sent = 0;
        for _ in 0..frames {
            let Some(frame) = self.flow.poll_transmit(SubflowId(id), self.now, room) else { break };
            let mut wire = BytesMut::new();
            frame.encode(&mut wire);
            assert_eq!(wire.len(), frame.encoded_len(), "{frame:?}");
            assert!(wire.len() <= room, "{frame:?} is over the {room} bytes offered");
            assert_eq!(Frame::decode_all(wire.clone().freeze()), Ok(vec![frame]));
            sent += wire.len();
        }
        self.settle();
        sent
    }

    /// The application writes `n` bytes; returns how many were taken.
    pub fn write(&mut self, n: usize) -> usize {
        let taken = self.flow.write(&vec![7; n]).unwrap_or(0);
        self.settle();
        taken
    }

    /// The application finishes its side.
    pub fn finish(&mut self) {
        let _ = self.flow.finish();
        self.settle();
    }

    /// The application reads up to `n` bytes; returns how many it got.
    pub fn read(&mut self, n: usize) -> usize {
        let got = match self.flow.read(&mut vec![0; n]) {
            Ok(ReadOutcome::Data(got)) => got,
            _ => 0,
        };
        self.settle();
        got
    }

    /// The application aborts the flow.
    pub fn abort(&mut self) {
        self.flow.abort(1, "fuzzing");
        self.settle();
    }

    /// Switches the scheduling policy to the one numbered `policy` on the wire, if any.
    pub fn set_policy(&mut self, policy: u8) {
        if let Some(p) = PathPolicy::from_wire(policy) {
            self.flow.set_policy(p);
        }
        self.settle();
    }

    /// Drains the flow's events as the runtime does: a dead subflow's socket is closed.
    fn settle(&mut self) {
        while let Some(event) = self.flow.poll_event() {
            if let FlowEvent::SubflowDead { id } = event {
                self.subflows.remove(&id.0);
            }
        }
        let _ = self.flow.poll_timeout();
    }
}

// ---- frames ----

/// What became of a record's plaintext decoded into frames and encoded again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reencoded {
    /// The frames, as `Debug` renders them.
    pub frames: String,
    /// Their encoding.
    pub bytes: Vec<u8>,
    /// The sum of their `encoded_len`.
    pub encoded_len: usize,
}

/// Decodes one record's plaintext into frames (`Err`: why not) and encodes them again.
pub fn reencode_frames(plaintext: &[u8]) -> Result<Reencoded, String> {
    let frames = Frame::decode_all(Bytes::copy_from_slice(plaintext)).map_err(|e| format!("{e:?}"))?;
    let mut bytes = BytesMut::new();
    for frame in &frames {
        frame.encode(&mut bytes);
    }
    let encoded_len = frames.iter().map(Frame::encoded_len).sum();
    Ok(Reencoded { frames: format!("{frames:?}"), bytes: bytes.to_vec(), encoded_len })
}

/// One encoded frame of each kind (seeds for the targets).
pub fn sample_frames() -> Vec<Vec<u8>> {
    let frames = [
        Frame::Data { offset: 0, fin: false, payload: Bytes::from_static(b"hello") },
        Frame::Data { offset: 5, fin: true, payload: Bytes::from_static(b"bye") },
        Frame::Ack { cum: 5, ranges: vec![7..9, 12..20], window: 1 << 20 },
        Frame::Ping { id: 1 },
        Frame::Pong { id: 1 },
        Frame::Addrs { addrs: vec!["192.0.2.1:4000".parse().expect("addr"), "[2001:db8::1]:4001".parse().expect("addr")], relays: vec!["relay.example:7451".into()] },
        Frame::Close { code: 1, reason: "done".into() },
        Frame::Abandon { token: 3 },
        Frame::Standby { standby: true },
        Frame::Policy { policy: PathPolicy::Energy },
        Frame::Demand { overflow: true },
        Frame::Punch { from: "192.0.2.1:1".parse().unwrap(), to: "192.0.2.2:2".parse().unwrap() },
    ];
    frames
        .iter()
        .map(|f| {
            let mut out = BytesMut::new();
            f.encode(&mut out);
            out.to_vec()
        })
        .collect()
}
