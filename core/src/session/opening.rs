//! How a subflow opens: the clear header, the exchange that follows it, and the decision to
//! admit a JOIN, as byte-level codecs with no I/O.
//!
//! ```text
//! header    = magic "MSKT"  version:u8 (3)  kind:u8
//! kind 1 NEW_FLOW: → len:u16 noise_msg1     ← len:u16 noise_msg2
//! kind 2 JOIN:     → join_id[16] join_seq:u64 resume:u64 mac[16] mac1[16]
//!                  ← 0 mac[16]  (accepted)  |  4 mac[16]  (accepted; this host takes
//!                    JOINs in SYNs: TCP Fast Open)  |  code:u8 len:u8 reason (refused, then
//!                    close; code 1 "unknown flow" adds sig[64], the peer's Ed25519 signature)
//!                  (a JOIN whose mac1 is wrong gets no answer: the connection is closed)
//! ```
//! After that, both directions carry sealed records ([`super::records`]).
//!
//! Each decoder takes the bytes read so far and says either what they hold or how many
//! bytes it needs in all ([`Progress::Need`]), never more than the exchange can hold: a
//! reader reads exactly that much, so it never consumes the records that follow, and no
//! input can make it buffer more than a few hundred bytes.

use crate::identity::{verify_signature, Identity};
use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::session::join::{self, JoinId, JoinRefusal, JoinRequest, JOIN_LEN, MAC_LEN};
use crate::session::{FlowId, ReplayWindow, MAX_HANDSHAKE_MSG};

const MAGIC: &[u8; 4] = b"MSKT";
const VERSION: u8 = 3;
const HEADER_LEN: usize = 6;
/// Status byte of an accepted JOIN.
const JOIN_OK: u8 = 0;
/// Status byte of an accepted JOIN from a host that takes JOINs in SYNs.
const JOIN_OK_FAST_OPEN: u8 = 4;
const SIGNATURE_LEN: usize = 64;

/// What a decoder made of the bytes so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress<T> {
    /// The first `n` bytes are needed (more than there are) before it can say.
    Need(usize),
    /// Done; the value used exactly the bytes given.
    Done(T),
}

/// What a new subflow asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    NewFlow = 1,
    Join = 2,
}

/// Why an incoming subflow's opening was refused before any session existed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OpeningError {
    #[error("not a msocket subflow (bad magic)")]
    BadMagic,
    #[error("unsupported protocol version {0}")]
    Version(u8),
    #[error("unknown subflow kind {0}")]
    Kind(u8),
    #[error("handshake message of {0} bytes is over the limit")]
    TooLong(usize),
}

/// What the opening client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Opening {
    /// The first Noise message of a new flow.
    NewFlow(Vec<u8>),
    /// A JOIN, not yet checked.
    Join(JoinRequest),
}

/// The clear header that starts a subflow of `kind`.
pub(crate) fn header(kind: Kind) -> [u8; HEADER_LEN] {
    header_of_kind(kind as u8)
}

/// The clear header with kind byte `kind` (relay connections use their own kinds).
pub(crate) fn header_of_kind(kind: u8) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(MAGIC);
    h[4] = VERSION;
    h[5] = kind;
    h
}

/// Decodes a clear header: its kind byte, not yet checked.
pub(crate) fn decode_header(buf: &[u8]) -> Result<Progress<u8>, OpeningError> {
    let Some(h) = buf.get(..HEADER_LEN) else {
        // A wrong magic is refused as soon as it shows.
        if !MAGIC.starts_with(&buf[..buf.len().min(4)]) {
            return Err(OpeningError::BadMagic);
        }
        return Ok(Progress::Need(HEADER_LEN));
    };
    if &h[..4] != MAGIC {
        return Err(OpeningError::BadMagic);
    }
    if h[4] != VERSION {
        return Err(OpeningError::Version(h[4]));
    }
    Ok(Progress::Done(h[5]))
}

/// A `u16`-length-prefixed handshake message behind `prefix`.
pub(crate) fn handshake_message(prefix: &[u8], msg: &[u8]) -> Vec<u8> {
    debug_assert!(msg.len() <= MAX_HANDSHAKE_MSG);
    let mut out = Vec::with_capacity(prefix.len() + 2 + msg.len());
    out.extend_from_slice(prefix);
    out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    out.extend_from_slice(msg);
    out
}

/// The bytes that open a new flow: header and the first handshake message.
pub(crate) fn new_flow(msg1: &[u8]) -> Vec<u8> {
    handshake_message(&header(Kind::NewFlow), msg1)
}

/// The bytes a client sends to join its flow with the listener whose Noise key is
/// `listener_noise`: header and JOIN body.
pub(crate) fn join_request(key: &[u8; 32], listener_noise: &[u8; 32], seq: u64, resume: u64) -> Vec<u8> {
    let mut out = header(Kind::Join).to_vec();
    out.extend_from_slice(&join::request(key, listener_noise, seq, resume));
    out
}

/// Decodes a `u16`-length-prefixed handshake message at `buf[at..]`.
fn decode_handshake_at(buf: &[u8], at: usize) -> Result<Progress<Vec<u8>>, OpeningError> {
    let Some(len) = buf.get(at..at + 2) else {
        return Ok(Progress::Need(at + 2));
    };
    let len = u16::from_be_bytes([len[0], len[1]]) as usize;
    if len > MAX_HANDSHAKE_MSG {
        return Err(OpeningError::TooLong(len));
    }
    match buf.get(at + 2..at + 2 + len) {
        Some(msg) => Ok(Progress::Done(msg.to_vec())),
        None => Ok(Progress::Need(at + 2 + len)),
    }
}

/// Listener: decodes what a client sends to open a subflow.
pub(crate) fn decode_opening(buf: &[u8]) -> Result<Progress<Opening>, OpeningError> {
    let kind = match decode_header(buf)? {
        Progress::Done(kind) => kind,
        Progress::Need(n) => return Ok(Progress::Need(n)),
    };
    match kind {
        1 => Ok(match decode_handshake_at(buf, HEADER_LEN)? {
            Progress::Done(msg) => Progress::Done(Opening::NewFlow(msg)),
            Progress::Need(n) => Progress::Need(n),
        }),
        2 => match buf.get(HEADER_LEN..HEADER_LEN + JOIN_LEN) {
            Some(body) => Ok(Progress::Done(Opening::Join(join::parse_request(body.try_into().expect("JOIN_LEN bytes"))))),
            None => Ok(Progress::Need(HEADER_LEN + JOIN_LEN)),
        },
        k => Err(OpeningError::Kind(k)),
    }
}

/// Client: decodes the listener's answer to NEW_FLOW (its handshake message).
pub(crate) fn decode_new_flow_answer(buf: &[u8]) -> Result<Progress<Vec<u8>>, OpeningError> {
    decode_handshake_at(buf, 0)
}

/// How far ahead of the highest admitted join sequence a listener expects JOINs (a
/// client's racing dials each take the next sequence), and how long behind it keeps
/// identifiers for copies.
pub(crate) const JOIN_WINDOW: u64 = 16;
/// Copies of one JOIN admitted besides the first (see [`admit_join`]).
const MAX_JOIN_COPIES: u8 = 2;

/// The JOINs a flow admitted: their sequence numbers, and for recent ones the MAC and how
/// many copies came.
#[derive(Debug)]
pub(crate) struct JoinsSeen {
    seqs: ReplayWindow,
    recent: VecDeque<(u64, [u8; MAC_LEN], u8)>,
}

impl JoinsSeen {
    pub(crate) fn new() -> JoinsSeen {
        JoinsSeen { seqs: ReplayWindow::new(), recent: VecDeque::new() }
    }
}

/// What the flow a JOIN names looks like to the listener.
pub(crate) struct JoinTarget<'a> {
    pub(crate) join_key: &'a [u8; 32],
    pub(crate) joins: &'a mut JoinsSeen,
}

/// How a JOIN was admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admitted {
    /// The first with its sequence number.
    First,
    /// A byte-identical copy of an admitted JOIN: someone on the path duplicated it, and
    /// which of the two is the joiner's is not known yet. Both become subflows; the first
    /// on which a fresh record arrives keeps the join, the others are retired then.
    Copy,
}

/// Listener: whether to admit `request` to the flow it names (None: no such flow here). An
/// admitted sequence number is remembered, so a JOIN is admitted once, plus at most
/// [`MAX_JOIN_COPIES`] identical copies while it is recent (so an observer's copy that
/// arrives first cannot shut the joiner out); unseen ones may come out of order (the
/// client's dials race, and each JOIN may ride its SYN).
pub(crate) fn admit_join(request: &JoinRequest, flow: Option<JoinTarget<'_>>) -> Result<Admitted, JoinRefusal> {
    let Some(flow) = flow else {
        return Err(JoinRefusal::UnknownFlow);
    };
    if !request.verify(flow.join_key) {
        return Err(JoinRefusal::BadMac);
    }
    let joins = flow.joins;
    if !joins.seqs.is_fresh(request.seq) {
        return match joins.recent.iter_mut().find(|(seq, mac, _)| *seq == request.seq && *mac == request.mac) {
            Some((_, _, copies)) if *copies < MAX_JOIN_COPIES => {
                *copies += 1;
                Ok(Admitted::Copy)
            }
            _ => Err(JoinRefusal::Replayed),
        };
    }
    joins.seqs.insert(request.seq);
    if joins.recent.len() >= JOIN_WINDOW as usize {
        joins.recent.pop_front();
    }
    joins.recent.push_back((request.seq, request.mac, 0));
    Ok(Admitted::First)
}

/// Listener: which flow each expected JOIN identifier names. A flow's JOINs are expected
/// from its highest admitted sequence (0 at first) up to [`JOIN_WINDOW`] beyond; the
/// identifiers of up to `JOIN_WINDOW` sequences behind it stay for copies of recent JOINs.
#[derive(Debug, Default)]
pub(crate) struct ExpectedJoins {
    by_id: HashMap<JoinId, (FlowId, u64)>,
    /// Each flow's highest admitted sequence and its expected identifiers.
    by_flow: HashMap<FlowId, (u64, BTreeMap<u64, JoinId>)>,
}

impl ExpectedJoins {
    /// Expects the JOINs of `flow` (keyed by `key`) around its highest admitted join
    /// sequence, now that `admitted` was (late ones, out of order, move nothing).
    pub(crate) fn expect(&mut self, flow: FlowId, key: &[u8; 32], admitted: u64) {
        let (highest, ids) = self.by_flow.entry(flow).or_default();
        *highest = (*highest).max(admitted);
        let (low, high) = (highest.saturating_sub(JOIN_WINDOW), highest.saturating_add(JOIN_WINDOW));
        while let Some((&seq, _)) = ids.first_key_value().filter(|(&seq, _)| seq < low) {
            if let Some(id) = ids.remove(&seq) {
                self.by_id.remove(&id);
            }
        }
        for seq in low.max(1)..=high {
            if let std::collections::btree_map::Entry::Vacant(slot) = ids.entry(seq) {
                let id = join::join_id(key, seq);
                slot.insert(id);
                self.by_id.insert(id, (flow, seq));
            }
        }
    }

    /// The flow a JOIN with identifier `id` and sequence `seq` is for.
    pub(crate) fn flow(&self, id: &JoinId, seq: u64) -> Option<FlowId> {
        self.by_id.get(id).filter(|(_, s)| *s == seq).map(|(flow, _)| *flow)
    }

    /// Stops expecting JOINs of `flow`.
    pub(crate) fn forget(&mut self, flow: &FlowId) {
        for id in self.by_flow.remove(flow).into_iter().flat_map(|(_, ids)| ids.into_values()) {
            self.by_id.remove(&id);
        }
    }
}

/// Listener: the answer to an admitted JOIN.
pub(crate) fn join_accept(key: &[u8; 32], id: &JoinId, seq: u64, fast_open: bool) -> Vec<u8> {
    let mut out = vec![if fast_open { JOIN_OK_FAST_OPEN } else { JOIN_OK }];
    out.extend_from_slice(&join::accept_mac(key, id, seq, fast_open));
    out
}

/// Listener: the answer to a refused JOIN; a refusal for a flow this endpoint does not know
/// is signed by its `identity` (it no longer holds the flow's keys, so only its long-term
/// key can make the refusal believable). Only JOINs with a right `mac1` get here, from
/// someone who knows our public key: a scanner learns nothing.
pub(crate) fn join_refuse(why: JoinRefusal, identity: &Identity, id: &JoinId, seq: u64) -> Vec<u8> {
    let reason = why.to_string();
    let mut out = vec![why as u8, reason.len() as u8];
    out.extend_from_slice(reason.as_bytes());
    if why == JoinRefusal::UnknownFlow {
        out.extend_from_slice(&identity.sign(&unknown_flow_statement(id, seq)));
    }
    out
}

/// The words an endpoint signs to say it does not know a JOIN's flow.
fn unknown_flow_statement(id: &JoinId, seq: u64) -> Vec<u8> {
    let mut msg = b"msocket unknown flow\0".to_vec();
    msg.extend_from_slice(id);
    msg.extend_from_slice(&seq.to_be_bytes());
    msg
}

/// Why the listener did not take our JOIN, as the client reads its answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum JoinAnswerError {
    /// Refused for a reason the listener names by code (`None`: a code we do not know).
    #[error("join refused: {}", match .0 { Some(why) => why.to_string(), None => format!("code {}", .1) })]
    Refused(Option<JoinRefusal>, u8),
    /// The peer says it does not know the flow; `proven` when the statement is signed by
    /// the peer's identity key (anyone else may say it, but it then proves nothing).
    #[error("join refused: {}", if *.proven { "the peer no longer knows this flow" } else { "an unproven claim that the flow is unknown" })]
    UnknownFlow { proven: bool },
    #[error("join reply not authenticated (not our peer)")]
    BadMac,
}

impl JoinAnswerError {
    /// Whether the flow can never be joined again: the peer itself said it no longer
    /// knows it.
    pub(crate) fn is_fatal(&self) -> bool {
        matches!(self, JoinAnswerError::UnknownFlow { proven: true })
    }
}

/// What an accepted JOIN's answer says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JoinAccepted {
    /// The peer's host takes JOINs in SYNs (TCP Fast Open): later joins may ride them.
    pub(crate) fast_open: bool,
}

/// What a joining client checks the answer against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JoinSent<'a> {
    pub(crate) join_key: &'a [u8; 32],
    pub(crate) id: &'a JoinId,
    pub(crate) seq: u64,
    /// The peer's Ed25519 key from its name record: only its signature proves a claim
    /// that the flow is unknown.
    pub(crate) peer_signing_key: Option<&'a [u8; 32]>,
}

/// Client: decodes and checks the listener's answer to our JOIN.
pub(crate) fn decode_join_answer(
    buf: &[u8],
    sent: &JoinSent<'_>,
) -> Progress<Result<JoinAccepted, JoinAnswerError>> {
    let Some(&status) = buf.first() else {
        return Progress::Need(1);
    };
    if status == JOIN_OK || status == JOIN_OK_FAST_OPEN {
        let Some(tag) = buf.get(1..1 + MAC_LEN) else {
            return Progress::Need(1 + MAC_LEN);
        };
        let fast_open = status == JOIN_OK_FAST_OPEN;
        let tag: &[u8; MAC_LEN] = tag.try_into().expect("MAC_LEN bytes");
        return Progress::Done(match join::verify_accept(sent.join_key, sent.id, sent.seq, fast_open, tag) {
            true => Ok(JoinAccepted { fast_open }),
            false => Err(JoinAnswerError::BadMac),
        });
    }
    let Some(&len) = buf.get(1) else {
        return Progress::Need(2);
    };
    let reason_end = 2 + len as usize;
    let why = JoinRefusal::from_code(status);
    if why != Some(JoinRefusal::UnknownFlow) {
        return match buf.len() >= reason_end {
            // The reason's text is the peer's and unchecked: the code says it.
            true => Progress::Done(Err(JoinAnswerError::Refused(why, status))),
            false => Progress::Need(reason_end),
        };
    }
    let Some(signature) = buf.get(reason_end..reason_end + SIGNATURE_LEN) else {
        return Progress::Need(reason_end + SIGNATURE_LEN);
    };
    let signature: &[u8; SIGNATURE_LEN] = signature.try_into().expect("64 bytes");
    let statement = unknown_flow_statement(sent.id, sent.seq);
    let proven = sent.peer_signing_key.is_some_and(|k| verify_signature(k, &statement, signature));
    Progress::Done(Err(JoinAnswerError::UnknownFlow { proven }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    /// Feeds `bytes` to `decode` the way a reader does: exactly as many as it asks for.
    fn feed<T>(bytes: &[u8], mut decode: impl FnMut(&[u8]) -> Progress<T>) -> Option<(T, usize)> {
        let mut have = 0;
        loop {
            match decode(&bytes[..have]) {
                Progress::Done(v) => return Some((v, have)),
                Progress::Need(n) => {
                    assert!(n > have, "a decoder asked for {n} bytes with {have} in hand");
                    assert!(n <= HEADER_LEN + 2 + MAX_HANDSHAKE_MSG, "asked for {n} bytes");
                    if n > bytes.len() {
                        return None;
                    }
                    have = n;
                }
            }
        }
    }

    fn opening(bytes: &[u8]) -> Option<(Result<Opening, OpeningError>, usize)> {
        feed(bytes, |b| match decode_opening(b) {
            Ok(Progress::Need(n)) => Progress::Need(n),
            Ok(Progress::Done(o)) => Progress::Done(Ok(o)),
            Err(e) => Progress::Done(Err(e)),
        })
    }

    #[test]
    fn openings_decode_exactly_their_bytes_and_leave_what_follows() {
        let msg1 = vec![5u8; 96];
        let mut wire = new_flow(&msg1);
        let len = wire.len();
        wire.extend_from_slice(b"records follow");
        assert_eq!(opening(&wire), Some((Ok(Opening::NewFlow(msg1)), len)));

        let (key, listener) = ([3u8; 32], [8u8; 32]);
        let mut wire = join_request(&key, &listener, 7, 1234);
        wire.extend_from_slice(b"records follow");
        let (Ok(Opening::Join(req)), used) = opening(&wire).unwrap() else { panic!() };
        assert_eq!((used, req.id, req.seq, req.resume), (HEADER_LEN + JOIN_LEN, join::join_id(&key, 7), 7, 1234));
        assert!(req.verify(&key) && req.verify_mac1(&listener));
    }

    #[test]
    fn bad_openings_are_refused_by_kind_as_soon_as_they_show() {
        assert_eq!(decode_opening(b"GE"), Err(OpeningError::BadMagic));
        assert_eq!(decode_opening(b"GET / HTTP/1.1"), Err(OpeningError::BadMagic));
        assert_eq!(decode_opening(b"MSKT\x02\x01"), Err(OpeningError::Version(2)));
        assert_eq!(decode_opening(b"MSKT\x03\x09"), Err(OpeningError::Kind(9)));
        assert_eq!(decode_opening(b"MSKT\x03\x01\xff\xff"), Err(OpeningError::TooLong(65535)));
        assert_eq!(decode_opening(b"MSK"), Ok(Progress::Need(HEADER_LEN)));
    }

    #[test]
    fn join_admission_checks_the_flow_the_mac_and_the_sequence() {
        let key = [3u8; 32];
        let mut seen = JoinsSeen::new();
        let join = |seq, resume| join::parse_request(&join::request(&key, &[8u8; 32], seq, resume));
        fn target<'a>(key: &'a [u8; 32], joins: &'a mut JoinsSeen) -> Option<JoinTarget<'a>> {
            Some(JoinTarget { join_key: key, joins })
        }
        assert_eq!(admit_join(&join(1, 0), None), Err(JoinRefusal::UnknownFlow));
        let forged = JoinRequest { resume: 99, ..join(1, 0) };
        assert_eq!(admit_join(&forged, target(&key, &mut seen)), Err(JoinRefusal::BadMac));
        assert_eq!(admit_join(&join(5, 0), target(&key, &mut seen)), Ok(Admitted::First));
        // Copies of that very JOIN (an observer's, or the joiner's behind one): two more.
        assert_eq!(admit_join(&join(5, 0), target(&key, &mut seen)), Ok(Admitted::Copy));
        assert_eq!(admit_join(&join(5, 0), target(&key, &mut seen)), Ok(Admitted::Copy));
        assert_eq!(admit_join(&join(5, 0), target(&key, &mut seen)), Err(JoinRefusal::Replayed));
        // The same sequence with another resume point is no copy.
        assert_eq!(admit_join(&join(5, 7), target(&key, &mut seen)), Err(JoinRefusal::Replayed));
        assert_eq!(admit_join(&join(3, 0), target(&key, &mut seen)), Ok(Admitted::First), "out of order");
        assert_eq!(admit_join(&join(u64::MAX, 0), target(&key, &mut seen)), Err(JoinRefusal::Replayed));
    }

    #[test]
    fn expected_joins_follow_the_highest_admitted_sequence() {
        let key = [3u8; 32];
        let (flow, other) = (FlowId([8; 16]), FlowId([9; 16]));
        let mut expected = ExpectedJoins::default();
        expected.expect(flow, &key, 0);
        expected.expect(other, &[4u8; 32], 0);
        let id = |seq| join::join_id(&key, seq);
        assert_eq!(expected.flow(&id(1), 1), Some(flow));
        assert_eq!(expected.flow(&id(JOIN_WINDOW), JOIN_WINDOW), Some(flow));
        assert_eq!(expected.flow(&id(JOIN_WINDOW + 1), JOIN_WINDOW + 1), None, "too far ahead");
        assert_eq!(expected.flow(&id(1), 2), None, "an identifier with another sequence");
        expected.expect(flow, &key, 40);
        expected.expect(flow, &key, 3); // admitted late: the window stays
        assert_eq!(expected.flow(&id(40 + JOIN_WINDOW), 40 + JOIN_WINDOW), Some(flow));
        assert_eq!(expected.flow(&id(40 - JOIN_WINDOW), 40 - JOIN_WINDOW), Some(flow), "kept for copies");
        assert_eq!(expected.flow(&id(1), 1), None, "long behind");
        expected.forget(&flow);
        assert_eq!(expected.flow(&id(40), 40), None);
        assert_eq!(expected.by_flow.len(), 1);
        assert_eq!(expected.by_id.len(), JOIN_WINDOW as usize);
    }

    #[test]
    fn join_answers_are_checked_against_what_was_sent() {
        let key = [3u8; 32];
        let flow = join::join_id(&key, 9);
        let peer = Identity::from_seed([4; 32]);
        let stranger = Identity::from_seed([5; 32]);
        let peer_key = peer.public().signing;
        let sent = JoinSent { join_key: &key, id: &flow, seq: 9, peer_signing_key: Some(&peer_key) };
        let answer = |bytes: &[u8]| feed(bytes, |b| decode_join_answer(b, &sent)).map(|(a, used)| {
            assert_eq!(used, bytes.len());
            a
        });
        for fast_open in [false, true] {
            assert_eq!(answer(&join_accept(&key, &flow, 9, fast_open)), Some(Ok(JoinAccepted { fast_open })));
            assert_eq!(answer(&join_accept(&key, &flow, 8, fast_open)), Some(Err(JoinAnswerError::BadMac)));
        }
        let mut flipped = join_accept(&key, &flow, 9, false);
        flipped[0] = JOIN_OK_FAST_OPEN;
        assert_eq!(answer(&flipped), Some(Err(JoinAnswerError::BadMac)), "the fast-open bit is covered");
        let replayed = join_refuse(JoinRefusal::Replayed, &peer, &flow, 9);
        assert_eq!(answer(&replayed), Some(Err(JoinAnswerError::Refused(Some(JoinRefusal::Replayed), 3))));
        assert_eq!(answer(&[77, 2, b'h', b'i']), Some(Err(JoinAnswerError::Refused(None, 77))));
        let unknown = |who: &Identity| answer(&join_refuse(JoinRefusal::UnknownFlow, who, &flow, 9));
        assert_eq!(unknown(&peer), Some(Err(JoinAnswerError::UnknownFlow { proven: true })));
        assert_eq!(unknown(&stranger), Some(Err(JoinAnswerError::UnknownFlow { proven: false })));
        let other_seq = answer(&join_refuse(JoinRefusal::UnknownFlow, &peer, &flow, 10));
        assert_eq!(other_seq, Some(Err(JoinAnswerError::UnknownFlow { proven: false })), "a signed refusal of another JOIN");
    }

    /// Arbitrary bytes, cut anywhere: the decoders never panic, never ask for more than
    /// an exchange can hold, and read the same whether the bytes come whole or in pieces.
    #[test]
    fn arbitrary_bytes_never_panic_and_decode_alike_however_they_arrive() {
        use proptest::prelude::*;
        let key = [3u8; 32];
        let flow = join::join_id(&key, 9);
        let sent = JoinSent { join_key: &key, id: &flow, seq: 9, peer_signing_key: None };
        let prefixes = prop_oneof![
            Just(Vec::new()),
            Just(header(Kind::NewFlow).to_vec()),
            Just(header(Kind::Join).to_vec()),
            Just(vec![JOIN_OK]),
            Just(vec![1u8, 0]),
        ];
        proptest!(ProptestConfig::with_cases(3000), |(prefix in prefixes, tail in proptest::collection::vec(any::<u8>(), 0..1200))| {
            let bytes: Vec<u8> = prefix.into_iter().chain(tail).collect();
            let whole = opening(&bytes);
            if let Some((_, used)) = &whole {
                // Given exactly the bytes it used, at once, it says the same.
                let again = decode_opening(&bytes[..*used]);
                match (&whole, again) {
                    (Some((Ok(o), _)), Ok(Progress::Done(p))) => prop_assert_eq!(o, &p),
                    (Some((Err(e), _)), Err(f)) => prop_assert_eq!(e, &f),
                    (w, a) => prop_assert!(false, "{:?} vs {:?}", w, a),
                }
            }
            let answer = feed(&bytes, |b| decode_join_answer(b, &sent));
            if let Some((a, used)) = answer {
                prop_assert!(a.is_err() || used == 1 + MAC_LEN);
                prop_assert_eq!(decode_join_answer(&bytes[..used], &sent), Progress::Done(a));
            }
        });
    }
}
