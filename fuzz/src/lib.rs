//! The fuzz targets' bodies: each feeds arbitrary bytes to decoders or state machines of
//! msocket (through `msocket::fuzzing`) and checks what must hold whatever the input.
//! A target's binary in `fuzz_targets/` only calls the function of its name here.
//!
//! `write_seed_corpus` (an ignored test) writes valid encodings of every message kind to
//! `corpus/<target>/`, in the layout each target reads.

use std::collections::BTreeMap;

use bytes::BytesMut;
use msocket::unstable::name_protocol as secure_name;
use msocket::unstable::relay_protocol as relay;
use msocket::unstable::Progress;
use msocket::Identity;
use msocket::fuzzing::{self as f, FlowDriver, Finish, JoinTable, JoinVerdict, Read, Request, Response, SignedRecord, Step};

/// Reads the input of a target piece by piece; past its end every read gives zeros.
struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.data.split_at(n.min(self.data.len()));
        self.data = tail;
        head
    }

    fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }

    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) << 8 | u16::from(self.u8())
    }

    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        let got = self.bytes(8);
        b[..got.len()].copy_from_slice(got);
        u64::from_be_bytes(b)
    }
}

// ---- opening ----

/// Feeds `bytes` to `decode` the way a subflow reader does, exactly as many as it asks
/// for: the verdict and the bytes it used, or None when it wants more than there are.
fn feed(bytes: &[u8], max: usize, decode: fn(&[u8]) -> Step) -> Option<(String, usize)> {
    let mut have = 0;
    loop {
        match decode(&bytes[..have]) {
            Step::Done(v) => return Some((v, have)),
            Step::Need(n) => {
                assert!(n > have, "asked for {n} bytes with {have} in hand");
                assert!(n <= max, "asked for {n} bytes, over the {max} the exchange can hold");
                if n > bytes.len() {
                    return None;
                }
                have = n;
            }
        }
    }
}

/// Checks one incremental decoder on `bytes`, also cut at `cut`: it never asks for more
/// than `max` bytes, nor for bytes it has, and says the same however the bytes arrive.
fn check_decoder(bytes: &[u8], cut: usize, max: usize, decode: fn(&[u8]) -> Step) {
    let exact = feed(bytes, max, decode);
    let whole = decode(bytes);
    for len in [cut, bytes.len()] {
        match (decode(&bytes[..len]), &exact) {
            (Step::Need(n), exact) => {
                assert!(n > len && n <= max, "asked for {n} bytes with {len} in hand");
                if let Some((_, used)) = exact {
                    assert!(n <= *used, "asked for {n} bytes with {len} in hand, but {used} make a whole");
                }
            }
            (Step::Done(v), Some((w, _))) => assert_eq!(&v, w, "{len} bytes at once vs as asked for"),
            (Step::Done(v), None) => assert_eq!(Step::Done(v), whole, "a verdict on {len} bytes changed with more"),
        }
    }
    if let Some((v, used)) = exact {
        assert_eq!(decode(&bytes[..used]), Step::Done(v.clone()));
        assert_eq!(whole, Step::Done(v), "bytes past the exchange changed its verdict");
    }
}

/// The clear header and NEW_FLOW / JOIN, and both answers: `cut:u16 bytes`.
pub fn opening(data: &[u8]) {
    let mut input = Input { data };
    let cut = input.u16() as usize;
    let bytes = input.data;
    let cut = cut % (bytes.len() + 1);
    check_decoder(bytes, cut, f::MAX_OPENING, f::decode_opening);
    check_decoder(bytes, cut, f::MAX_NEW_FLOW_ANSWER, f::decode_new_flow_answer);
    check_decoder(bytes, cut, f::MAX_JOIN_ANSWER, f::decode_join_answer);
}

// ---- handshake ----

/// The Noise handshake: `0 msg` a responder reads a first message; `1 reply` an initiator
/// reads a reply; `2 edit…` a real reply, edited, reaches the initiator.
pub fn handshake(data: &[u8]) {
    let mut input = Input { data };
    match input.u8() % 3 {
        0 => {
            if let Ok(name) = f::respond(input.data) {
                assert!(name.len() <= 255);
            }
        }
        // Nobody but the responder can answer: the initiator's ephemeral key is fresh.
        1 => assert_ne!(f::initiate(input.data), Finish::Session),
        _ => {
            let mut changed = false;
            let end = f::handshake_with_edited_reply(|reply| {
                let before = reply.clone();
                match input.u8() % 3 {
                    0 => {
                        let at = input.u16() as usize;
                        for (i, x) in input.data.iter().enumerate() {
                            if let Some(b) = reply.get_mut((at + i) % before.len().max(1)) {
                                *b ^= x;
                            }
                        }
                    }
                    1 => reply.truncate(input.u16() as usize),
                    _ => reply.extend_from_slice(input.data),
                }
                changed = *reply != before;
            });
            match changed {
                false => assert_eq!(end, Finish::Session),
                true => assert_eq!(end, Finish::Noise, "an edited reply was not refused by Noise"),
            }
        }
    }
}

// ---- JOIN admission ----

/// Bytes of a JOIN opening: the header, identifier, sequence number, resume point and
/// both MACs.
const JOIN_OPENING_LEN: usize = 6 + 16 + 8 + 8 + 16 + 16;
/// Copies of an admitted JOIN that may be admitted besides it.
const MAX_COPIES: usize = 2;
/// How far beyond the highest admitted sequence number JOINs are expected.
const JOIN_WINDOW: u64 = 16;

/// What a listener admitted of one flow, kept by hand.
#[derive(Default)]
struct Admitted {
    /// The sequence numbers admitted first, with the JOIN's bytes and its copies admitted.
    first: BTreeMap<u64, (Vec<u8>, usize)>,
}

impl Admitted {
    /// Whether `seq` is new: never admitted, and not 8192 or more below the highest
    /// admitted (the largest number is never admitted).
    fn fresh(&self, seq: u64) -> bool {
        let max = self.first.last_key_value().map(|(s, _)| *s);
        seq != u64::MAX && max.is_none_or(|m| seq > m || (m - seq < 8192 && !self.first.contains_key(&seq)))
    }

    /// Whether the legitimate joiner's next JOINs must get in: unseen and at most
    /// `JOIN_WINDOW` beyond the highest admitted.
    fn expected(&self, seq: u64) -> bool {
        let max = self.first.last_key_value().map_or(0, |(s, _)| *s);
        seq > max && seq - max <= JOIN_WINDOW
    }
}

/// JOIN admission by a listener with a fixed table of two flows: a script of JOINs, each
/// valid for a flow (with a sequence number near or anywhere), raw bytes, or valid with one
/// bit flipped. What is admitted must be authentic, new or one of at most two copies of a
/// JOIN admitted, and the joiner's next JOINs must get in.
pub fn join(data: &[u8]) {
    let mut table = JoinTable::default();
    let mut admitted: Vec<Admitted> = (0..table.len()).map(|_| Admitted::default()).collect();
    let mut input = Input { data };
    let mut count = 0;
    while !input.is_empty() && count < 512 {
        count += 1;
        // op: kind (bits 0-1: valid, raw, one bit flipped, valid), flow (bit 2), a
        // sequence number anywhere rather than near (bit 6).
        let op = input.u8();
        let flow = usize::from(op >> 2 & 1) % table.len();
        let seq = match op & 0x40 {
            0 => u64::from(input.u16()),
            _ => input.u64(),
        };
        let (bytes, valid) = match op & 3 {
            0 | 3 => (table.request(flow, seq, u64::from(input.u8())), true),
            1 => (input.bytes(JOIN_OPENING_LEN).to_vec(), false),
            _ => {
                let mut bytes = table.request(flow, seq, 0);
                let bit = input.u16() as usize % (bytes.len() * 8);
                bytes[bit / 8] ^= 1 << (bit % 8);
                (bytes, false)
            }
        };
        let must_admit = valid && admitted[flow].expected(seq);
        let verdict = table.admit(&bytes);
        if bytes.len() < JOIN_OPENING_LEN || bytes[..6] != *b"MSKT\x03\x02" {
            assert_eq!(verdict, None, "not a JOIN: {bytes:02x?}");
            continue;
        }
        let verdict = verdict.expect("a whole JOIN is decided");
        let seq = u64::from_be_bytes(bytes[22..30].try_into().unwrap());
        let resume = u64::from_be_bytes(bytes[30..38].try_into().unwrap());
        // Which flow's, if it is authentic at all.
        let owner = (0..table.len()).find(|&i| table.request(i, seq, resume) == bytes[..JOIN_OPENING_LEN]);
        match verdict {
            JoinVerdict::First => {
                let i = owner.unwrap_or_else(|| panic!("a forged JOIN was admitted: {bytes:02x?}"));
                assert!(admitted[i].fresh(seq), "JOIN {seq} of flow {i} admitted again as new");
                admitted[i].first.insert(seq, (bytes.clone(), 0));
            }
            JoinVerdict::Copy => {
                let i = owner.unwrap_or_else(|| panic!("a forged JOIN was admitted as a copy: {bytes:02x?}"));
                let (original, copies) = admitted[i].first.get_mut(&seq).expect("a copy of a JOIN never admitted");
                assert_eq!(*original, bytes, "a copy that differs from the JOIN admitted");
                *copies += 1;
                assert!(*copies <= MAX_COPIES, "JOIN {seq} of flow {i} admitted {copies} times over");
            }
            JoinVerdict::NoAnswer => assert!(!valid, "a valid JOIN got no answer"),
            JoinVerdict::Refused(_) => {}
        }
        if must_admit {
            assert_eq!(verdict, JoinVerdict::First, "the joiner's JOIN {seq} of flow {flow} was not admitted");
        }
    }
}

// ---- records ----

/// The record layer: `0 cut:u16 bytes` cuts records off a byte stream, whole and in two
/// pieces; `1 script…` drives a flow with sealed records and everything else a runtime
/// does (see `drive_flow`).
pub fn records(data: &[u8]) {
    let mut input = Input { data };
    match input.u8() % 2 {
        0 => split_stream(&mut input),
        _ => drive_flow(&mut input),
    }
}

/// Cuts every whole record off `bytes` given in the pieces `pieces`, checking what
/// `bytes_wanted` says on the way; the records' (packet number, wire length).
fn split_pieces<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> Vec<(u64, usize)> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            let wanted = f::bytes_wanted(&buf);
            assert!(wanted <= f::RECORD_HEADER_LEN + usize::from(u16::MAX), "wants {wanted} bytes");
            let before = buf.len();
            match f::split_record(&mut buf) {
                Some((pn, len)) => {
                    assert_eq!(wanted, 0, "a record was whole while {wanted} more bytes were wanted");
                    assert_eq!(len, before - buf.len());
                    assert!(len >= f::RECORD_HEADER_LEN);
                    out.push((pn, len));
                }
                None => {
                    assert!(wanted > 0, "nothing wanted, yet no whole record");
                    break;
                }
            }
        }
    }
    out
}

fn split_stream(input: &mut Input<'_>) {
    let cut = input.u16() as usize;
    let bytes = input.data;
    let cut = cut % (bytes.len() + 1);
    let whole = split_pieces([bytes]);
    assert_eq!(split_pieces([&bytes[..cut], &bytes[cut..]]), whole);
    // As a reader takes them: what is wanted, no more.
    let mut at = 0;
    let mut pieces = Vec::new();
    let mut buf = Vec::new();
    while at < bytes.len() {
        let n = f::bytes_wanted(&buf).max(1).min(bytes.len() - at);
        buf.extend_from_slice(&bytes[at..at + n]);
        pieces.push(&bytes[at..at + n]);
        at += n;
        if f::bytes_wanted(&buf) == 0 {
            buf.clear();
        }
    }
    assert_eq!(split_pieces(pieces), whole);
}

/// A script of what happens to a flow: subflows added and lost, records sealed by the
/// peer (any packet number, any plaintext, whole or cut) or raw bytes arriving on them,
/// time passing, the flow sending, and the application writing, reading, finishing.
fn drive_flow(input: &mut Input<'_>) {
    let mut flow = FlowDriver::default();
    flow.add_subflow(false);
    let mut steps = 0;
    while !input.is_empty() && steps < 256 {
        steps += 1;
        let op = input.u8();
        let subflows = flow.subflows();
        let pick = |input: &mut Input<'_>| match subflows.len() {
            0 => None,
            n => Some(subflows[usize::from(input.u8()) % n]),
        };
        match op % 10 {
            0 => {
                flow.add_subflow(op & 0x10 != 0);
            }
            1 => {
                if let Some(id) = pick(input) {
                    flow.lose_subflow(id);
                }
            }
            2 => {
                let Some(id) = pick(input) else { continue };
                let pn = match op & 0x10 {
                    0 => u64::from(input.u16()),
                    _ => input.u64(),
                };
                let len = input.u16() as usize;
                let Some(record) = f::seal(pn, input.bytes(len)) else { continue };
                let clean = flow.pending(id) == 0;
                let reads = match op & 0x20 {
                    0 => flow.receive(id, &record),
                    _ => {
                        let cut = input.u16() as usize % record.len();
                        let mut reads = flow.receive(id, &record[..cut]);
                        reads.extend(flow.receive(id, &record[cut..]));
                        reads
                    }
                };
                if clean {
                    assert_eq!(reads.len(), 1, "one whole record, {reads:?}");
                    assert_ne!(reads[0], Read::Forged, "a record the peer sealed");
                }
            }
            3 => {
                let Some(id) = pick(input) else { continue };
                let len = usize::from(input.u8());
                flow.receive(id, input.bytes(len));
            }
            4 => flow.advance(u64::from(input.u16())),
            5 => {
                let Some(id) = pick(input) else { continue };
                let room = 64 + input.u16() as usize * 2;
                flow.transmit(id, room, 1 + usize::from(input.u8() % 64));
            }
            6 => {
                flow.write(input.u16() as usize * 4);
            }
            7 => {
                flow.read(input.u16() as usize * 4);
            }
            8 => match op & 0x30 {
                0 => flow.abort(),
                _ => flow.finish(),
            },
            _ => flow.set_policy(input.u8() % 5),
        }
    }
}

// ---- frames ----

/// A record's plaintext as frames: what decodes encodes to the same bytes, and decodes to
/// the same frames again.
pub fn frames(data: &[u8]) {
    if let Ok(r) = f::reencode_frames(data) {
        assert_eq!(r.bytes, data, "{}", r.frames);
        assert_eq!(r.encoded_len, data.len(), "{}", r.frames);
        assert_eq!(f::reencode_frames(&r.bytes), Ok(r));
    }
}

// ---- name protocol ----

/// Some time while the seeds' records are valid.
const NOW: u64 = 1_800_000_000;

/// The name server's messages and signed records: what decodes encodes to the same bytes
/// (the encodings are canonical, the request or response id included) and decodes the same
/// again; checking a record never panics. And the channel's first frames: a server reads a
/// hello (and can answer what it read), a client reads a welcome (which cannot be for its
/// fresh hello), either reads another version's.
pub fn name(data: &[u8]) {
    let _ = secure_name::other_version_refusal(data);
    let _ = secure_name::other_version_answer(data).map(|e| e.to_string());
    match data.get(..2) {
        Some(&[secure_name::PROTOCOL_VERSION, secure_name::secure::HELLO]) => {
            let server = Identity::from_seed([2; 32]);
            if let Ok((hello, request)) = secure_name::secure::ServerHello::read(&server, data) {
                let _ = Request::decode_tagged(&request);
                hello.reply(&server, &Response::Ok.encode()).expect("a hello read can be answered");
            }
        }
        Some(&[secure_name::PROTOCOL_VERSION, secure_name::secure::WELCOME]) => {
            let (hello, _) = secure_name::secure::ClientHello::new(&Request::Lookup("bob.example".into()).encode()).unwrap();
            assert!(hello.finish(data, None).is_err(), "a welcome taken for another hello");
        }
        _ => {}
    }
    if let Ok(record) = SignedRecord::decode(data) {
        assert_eq!(record.encode(), data);
        assert_eq!(SignedRecord::decode(&record.encode()).as_ref(), Ok(&record));
        let _ = record.verify(NOW).map_err(|e| e.to_string());
    }
    let peeked = Request::peek_id(data);
    match Request::decode_tagged(data) {
        Ok((id, request)) => {
            assert_eq!(id, peeked);
            assert_eq!(request.encode_tagged(id), data);
            assert_eq!(Request::decode_tagged(&request.encode_tagged(id)).as_ref(), Ok(&(id, request.clone())));
            if let Request::Register(record) = &request {
                let _ = record.verify(NOW);
            }
        }
        Err(e) => drop(e.to_string()),
    }
    match Response::decode_tagged(data) {
        Ok((id, response)) => {
            assert_eq!(response.encode_tagged(id), data);
            assert_eq!(Response::decode_tagged(&response.encode_tagged(id)).as_ref(), Ok(&(id, response.clone())));
            if let Response::Record(record) = &response {
                let _ = record.verify(NOW);
            }
        }
        Err(e) => drop(e.to_string()),
    }
}

/// Relay messages: a header, then messages back to back, as a relay or an endpoint reads
/// them. Every decode asks for no more than the bytes a message has, takes exactly them,
/// and what decodes re-encodes to the same bytes; a registration is checked like a relay
/// checks it.
pub fn relay(data: &[u8]) {
    let mut rest = match relay::decode_header(data) {
        Ok(Progress::Done(_)) => &data[relay::HEADER_LEN..],
        Ok(Progress::Need(n)) => {
            assert!(n > data.len() && n <= relay::HEADER_LEN);
            return;
        }
        Err(e) => {
            drop(e.to_string());
            data
        }
    };
    while !rest.is_empty() {
        match relay::Message::decode(rest) {
            Ok(Progress::Done(m)) => {
                let bytes = m.encode();
                assert_eq!(&rest[..bytes.len()], &bytes[..], "{m:?}");
                if let relay::Message::Register { public, signature } = &m {
                    let _ = relay::verify_registration(&[7; 32], public, signature);
                    let _ = relay::listener_key(public);
                }
                rest = &rest[bytes.len()..];
            }
            Ok(Progress::Need(n)) => {
                assert!(n > rest.len() && n <= 1 + relay::MAX_MESSAGE_LEN);
                return;
            }
            Err(e) => {
                drop(e.to_string());
                return;
            }
        }
    }
}

#[cfg(test)]
mod seeds {
    use std::path::PathBuf;

    use msocket::name::NameRecord;
    use msocket::unstable::name_protocol::RefuseCode;

    use super::*;

    /// Writes valid encodings of every message kind, in the layout of each target, to
    /// `corpus/<target>/seed-*`. Run: `cargo test --manifest-path fuzz/Cargo.toml -- --ignored`.
    #[test]
    #[ignore]
    fn write_seed_corpus() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
        let write = |target: &str, name: &str, bytes: Vec<u8>| {
            let dir = root.join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
        };
        let cat = |parts: &[&[u8]]| parts.concat();
        let cut = |n: u16| n.to_be_bytes().to_vec();

        // opening: cut:u16 bytes
        let msg1 = f::first_message("svc");
        for (name, bytes) in [
            ("new-flow", f::new_flow_opening(&msg1)),
            ("join", f::join_opening(f::JOIN_SEQ, 1234)),
            ("new-flow-answer", f::new_flow_answer(&[0x55; 64])),
            ("join-accept", f::join_accept(false)),
            ("join-accept-fast-open", f::join_accept(true)),
            ("join-unknown-flow", f::join_refuse(1, true)),
            ("join-unknown-flow-stranger", f::join_refuse(1, false)),
            ("join-replayed", f::join_refuse(3, true)),
            ("http", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        ] {
            write("opening", name, cat(&[&cut(5), &bytes]));
        }

        // handshake: 0 msg1 | 1 reply | 2 edit
        for (name, n) in [("svc", "svc"), ("empty", ""), ("long", &"n".repeat(255)[..])] {
            write("handshake", &format!("first-{name}"), cat(&[&[0], &f::first_message(n)]));
        }
        write("handshake", "reply", cat(&[&[1], &[0x11; 48]]));
        write("handshake", "unchanged", vec![2, 2]);
        write("handshake", "flipped", vec![2, 0, 0, 40, 1]);
        write("handshake", "truncated", vec![2, 1, 0, 47]);

        // join: a script of JOINs
        let table = JoinTable::default();
        let valid = |flow: u8, seq: u16| cat(&[&[flow << 2], &seq.to_be_bytes(), &[0]]);
        write("join", "in-order", cat(&[&valid(0, 1), &valid(0, 2), &valid(1, 1), &valid(0, 3)]));
        write("join", "replayed", cat(&[&valid(0, 5), &valid(0, 3), &valid(0, 5)]));
        let far = cat(&[&[0x40], &(1u64 << 40).to_be_bytes(), &[0]]);
        write("join", "far-ahead", cat(&[&valid(0, 5), &far, &valid(0, 6)]));
        write("join", "raw", cat(&[&[1], &table.request(0, 3, 9)]));
        write("join", "flipped", cat(&[&[2], &[0, 7], &[1, 0x20]]));

        // records: 0 cut:u16 stream | 1 script
        let frames = f::sample_frames();
        let stream: Vec<u8> = frames.iter().enumerate().flat_map(|(i, fr)| f::seal(i as u64, fr).unwrap()).collect();
        write("records", "stream", cat(&[&[0], &cut(17), &stream]));
        let sealed = |pn: u16, plaintext: &[u8]| cat(&[&[2, 0], &pn.to_be_bytes(), &(plaintext.len() as u16).to_be_bytes(), plaintext]);
        let mut script = vec![1u8];
        script.extend([6, 0, 100]); // write 400 bytes
        script.extend([5, 0, 0, 200, 8]); // send up to 8 frames
        for (pn, fr) in frames.iter().enumerate() {
            script.extend(sealed(pn as u16, fr));
        }
        script.extend([4, 0, 10]); // 10 ms pass
        script.extend([7, 1, 0]); // read
        script.extend(sealed(3, &frames[3])); // replayed
        write("records", "script", script);
        // write 1 KiB, a second subflow, both send, the first is lost, 2 s pass, an ACK
        let mut moves = vec![1u8, 6, 1, 0, 0, 5, 0, 0, 200, 8, 5, 1, 0, 200, 8, 1, 0, 4, 7, 208];
        moves.extend(sealed(0, &frames[2]));
        write("records", "moves", moves);

        // frames: each kind, and all in one record
        for (i, fr) in frames.iter().enumerate() {
            write("frames", &format!("kind-{i}"), fr.clone());
        }
        write("frames", "all", frames.concat());

        // name: signed records, requests, responses
        let id = Identity::from_seed([4; 32]);
        let p = id.public();
        let record = NameRecord {
            name: "bob.example".into(),
            signing_key: p.signing,
            noise_key: p.noise,
            addrs: vec!["198.51.100.2:9".parse().unwrap(), "[2001:db8::2]:9".parse().unwrap()],
            relays: vec!["relay.example:1".into()],
            seq: 7,
            expires: NOW + 3600,
        };
        let signed = SignedRecord::sign(record, &id).unwrap();
        write("name", "record", signed.encode());
        write("name", "register", Request::Register(signed.clone()).encode_tagged(1));
        write("name", "lookup", Request::Lookup("bob.example".into()).encode_tagged(2));
        write("name", "watch", Request::Watch { name: "bob.example".into(), after_seq: 7, wait_ms: 55_000 }.encode_tagged(3));
        write("name", "cancel", Request::Cancel.encode_tagged(3));
        write("name", "ok", Response::Ok.encode_tagged(1));
        write("name", "found", Response::Record(signed).encode_tagged(2));
        write("name", "not-found", Response::NotFound.encode_tagged(2));
        write("name", "watching", Response::Watching.encode_tagged(3));
        write("name", "unchanged", Response::Unchanged.encode_tagged(3));
        let refused = Response::Refused { code: RefuseCode::Stale, current_seq: 9, message: "stale".into() };
        write("name", "refused", refused.encode_tagged(1));
        let busy = Response::Refused { code: RefuseCode::Busy, current_seq: 64, message: "busy".into() };
        write("name", "refused-connection", busy.encode_tagged(0));
        let lookup = Request::Lookup("bob.example".into()).encode();
        let (_, hello) = secure_name::secure::ClientHello::new(&lookup).unwrap();
        write("name", "hello", hello.clone());
        let (server_hello, _) = secure_name::secure::ServerHello::read(&Identity::from_seed([2; 32]), &hello).unwrap();
        write("name", "welcome", server_hello.reply(&Identity::from_seed([2; 32]), &Response::NotFound.encode()).unwrap().0);
        write("name", "version-2", secure_name::other_version_refusal(&[2, 2, 0, 0, 0, 1]).unwrap());
        write("name", "version-1", secure_name::other_version_refusal(&[1, 2]).unwrap());

        // relay: a header, then messages of every kind
        let a: std::net::SocketAddr = "198.51.100.2:443".parse().unwrap();
        let b: std::net::SocketAddr = "[2001:db8::2]:9".parse().unwrap();
        let messages = [
            relay::Message::Challenge { nonce: [1; 32] },
            relay::register(&id, &[1; 32]),
            relay::Message::Dial { target: relay::listener_key(&p) },
            relay::Message::Registered { observed: a },
            relay::Message::Connected { client: a, listener: b },
            relay::Message::Accepted { listener: b, client: a },
            relay::Message::Refused { why: relay::RelayRefusal::Busy, reason: "busy".into() },
            relay::Message::Accept { token: [3; 16] },
            relay::Message::DialBack { token: [3; 16], client: a },
            relay::Message::Ping(1),
            relay::Message::Pong(1),
        ];
        for (kind, m) in [relay::KIND_REGISTER, relay::KIND_DIAL, relay::KIND_ACCEPT].iter().zip(&messages) {
            write("relay", &format!("header-{kind}"), cat(&[&relay::header(*kind), &m.encode()]));
        }
        for (i, m) in messages.iter().enumerate() {
            write("relay", &format!("message-{i}"), m.encode());
        }
    }

    /// Every seed passes its target.
    #[test]
    fn seeds_pass_their_targets() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
        let targets: [(&str, fn(&[u8])); 6] =
            [("opening", opening), ("handshake", handshake), ("join", join), ("records", records), ("frames", frames), ("name", name)];
        for (target, run) in targets {
            for entry in std::fs::read_dir(root.join(target)).into_iter().flatten() {
                run(&std::fs::read(entry.unwrap().path()).unwrap());
            }
        }
    }
}
