//! Name records, their canonical encoding and their signatures.
//!
//! Encoding of a [`SignedRecord`] (all integers big-endian):
//!
//! ```text
//! signed  = version:u8 (=1) record signature:[u8; 64]
//! record  = name_len:u16 name:[u8; name_len]          (1..=253 bytes, see validate_name)
//!           signing_key:[u8; 32] noise_key:[u8; 32]
//!           addr_count:u8 addr*                         (addr_count <= 16)
//!           relay_count:u8 relay*                       (relay_count <= 8)
//!           seq:u64 expires:u64                         (expires: unix seconds)
//! addr    = 4:u8 ipv4:[u8; 4] port:u16 | 6:u8 ipv6:[u8; 16] port:u16
//! relay   = len:u16 utf8:[u8; len]                      (1..=255 bytes)
//! ```
//!
//! The signature is Ed25519, by `signing_key`, over `"msocket name record v1\0" || record`.
//! The prefix keeps a record signature from ever being valid as any other message signed
//! by the same key. The encoding is canonical (one byte string per record), so verifying
//! re-encodes the decoded record and checks the signature over that.

use std::net::SocketAddr;

use bytes::BufMut;

use super::NameError;
use crate::identity::{verify_signature, Identity, PublicIdentity};
use crate::wire::{put_socket_addr, Reader};

/// Version byte that starts an encoded [`SignedRecord`].
pub const RECORD_VERSION: u8 = 1;
/// Longest name, in bytes.
pub const MAX_NAME_LEN: usize = 253;
/// Most addresses a record may carry.
pub const MAX_ADDRS: usize = 16;
/// Most relays a record may carry.
pub const MAX_RELAYS: usize = 8;
/// Longest relay string, in bytes.
pub const MAX_RELAY_LEN: usize = 255;

const MAX_LABEL_LEN: usize = 63;
const SIGNATURE_CONTEXT: &[u8] = b"msocket name record v1\0";

/// Where a peer can be reached and which keys it holds, as published under its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NameRecord {
    /// The name (see [`validate_name`]).
    pub name: String,
    /// Ed25519 key that signs this record and owns the name.
    pub signing_key: [u8; 32],
    /// X25519 Noise static key peers must expect in the handshake.
    pub noise_key: [u8; 32],
    /// Direct addresses, best first (at most [`MAX_ADDRS`]).
    pub addrs: Vec<SocketAddr>,
    /// Relays the peer listens on (at most [`MAX_RELAYS`], each at most
    /// [`MAX_RELAY_LEN`] bytes).
    pub relays: Vec<String>,
    /// Version of the record: each new record for a name needs a higher `seq`.
    pub seq: u64,
    /// Unix time (seconds) from which the record is no longer valid.
    pub expires: u64,
}

/// A [`NameRecord`] with the Ed25519 signature of its `signing_key`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SignedRecord {
    /// The signed record.
    pub record: NameRecord,
    /// Signature over the record's canonical encoding.
    pub signature: [u8; 64],
}

/// Checks that `name` is a msocket name: lowercase and DNS-like, 1..=253 bytes of
/// dot-separated labels, each 1..=63 bytes of `a-z`, `0-9` and `-`, not starting or ending
/// with `-`.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    let invalid = |reason: &str| {
        Err(NameError::InvalidName { name: name.to_string(), reason: reason.to_string() })
    };
    if name.is_empty() {
        return invalid("names cannot be empty");
    }
    if name.len() > MAX_NAME_LEN {
        return invalid("names are at most 253 bytes");
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return invalid("names are lowercase");
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return invalid("names contain only a-z, 0-9, '-' and '.'");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return invalid("a name cannot start or end with '.' or contain '..'");
        }
        if label.len() > MAX_LABEL_LEN {
            return invalid("each dot-separated label is at most 63 bytes");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return invalid("labels cannot start or end with '-'");
        }
    }
    Ok(())
}

impl NameRecord {
    /// A record for `name` with the keys of `keys`, no relays.
    pub fn new(name: impl Into<String>, keys: PublicIdentity, addrs: Vec<SocketAddr>, seq: u64, expires: u64) -> NameRecord {
        NameRecord { name: name.into(), signing_key: keys.signing, noise_key: keys.noise, addrs, relays: Vec::new(), seq, expires }
    }

    /// The keys the record binds to its name.
    pub fn public(&self) -> PublicIdentity {
        PublicIdentity { signing: self.signing_key, noise: self.noise_key }
    }

    /// Whether the record is no longer valid at `now_unix`.
    pub fn is_expired(&self, now_unix: u64) -> bool {
        now_unix >= self.expires
    }

    /// Checks the name and the size bounds.
    fn check_shape(&self) -> Result<(), NameError> {
        validate_name(&self.name)?;
        if self.addrs.len() > MAX_ADDRS {
            return Err(NameError::Malformed(format!(
                "{} addresses in a record (at most {MAX_ADDRS})",
                self.addrs.len()
            )));
        }
        if self.relays.len() > MAX_RELAYS {
            return Err(NameError::Malformed(format!(
                "{} relays in a record (at most {MAX_RELAYS})",
                self.relays.len()
            )));
        }
        if let Some(r) = self.relays.iter().find(|r| r.is_empty() || r.len() > MAX_RELAY_LEN) {
            return Err(NameError::Malformed(format!(
                "relay of {} bytes (1 to {MAX_RELAY_LEN} allowed)",
                r.len()
            )));
        }
        Ok(())
    }

    /// Appends the canonical encoding.
    ///
    /// Never panics: a field over its bound is clamped to one element or byte past the
    /// bound, so the bytes stay small and [`SignedRecord::decode`] refuses them.
    fn encode_into(&self, out: &mut Vec<u8>) {
        put_clamped_str(out, &self.name, MAX_NAME_LEN);
        out.put_slice(&self.signing_key);
        out.put_slice(&self.noise_key);
        let addrs = &self.addrs[..self.addrs.len().min(MAX_ADDRS + 1)];
        out.put_u8(addrs.len() as u8);
        for addr in addrs {
            put_socket_addr(out, addr);
        }
        let relays = &self.relays[..self.relays.len().min(MAX_RELAYS + 1)];
        out.put_u8(relays.len() as u8);
        for relay in relays {
            put_clamped_str(out, relay, MAX_RELAY_LEN);
        }
        out.put_u64(self.seq);
        out.put_u64(self.expires);
    }

    fn decode_from(r: &mut Reader<'_>) -> Result<NameRecord, NameError> {
        let name = r.short_str(MAX_NAME_LEN, "record name")?.to_string();
        let signing_key = r.array("signing key")?;
        let noise_key = r.array("noise key")?;
        let addr_count = r.u8("address count")? as usize;
        if addr_count > MAX_ADDRS {
            return Err(crate::wire::DecodeError::TooLong("address list").into());
        }
        let mut addrs = Vec::with_capacity(addr_count);
        for _ in 0..addr_count {
            addrs.push(r.socket_addr()?);
        }
        let relay_count = r.u8("relay count")? as usize;
        if relay_count > MAX_RELAYS {
            return Err(crate::wire::DecodeError::TooLong("relay list").into());
        }
        let mut relays = Vec::with_capacity(relay_count);
        for _ in 0..relay_count {
            let relay = r.short_str(MAX_RELAY_LEN, "relay")?;
            if relay.is_empty() {
                return Err(crate::wire::DecodeError::Invalid("empty relay").into());
            }
            relays.push(relay.to_string());
        }
        let seq = r.u64("sequence number")?;
        let expires = r.u64("expiry")?;
        Ok(NameRecord { name, signing_key, noise_key, addrs, relays, seq, expires })
    }

    /// The bytes the signature covers.
    fn signed_message(&self) -> Vec<u8> {
        let mut msg = Vec::with_capacity(SIGNATURE_CONTEXT.len() + 128);
        msg.put_slice(SIGNATURE_CONTEXT);
        self.encode_into(&mut msg);
        msg
    }
}

/// Writes a `u16`-length-prefixed string, at most `max + 1` bytes of it (see
/// [`NameRecord::encode_into`]).
fn put_clamped_str(out: &mut Vec<u8>, s: &str, max: usize) {
    let bytes = &s.as_bytes()[..s.len().min(max + 1)];
    out.put_u16(bytes.len() as u16);
    out.put_slice(bytes);
}

impl SignedRecord {
    /// Signs `record` with `identity`, after checking the name, the bounds and that the
    /// record carries `identity`'s public keys ([`NameError::KeyMismatch`] otherwise).
    pub fn sign(record: NameRecord, identity: &Identity) -> Result<SignedRecord, NameError> {
        record.check_shape()?;
        if record.public() != identity.public() {
            return Err(NameError::KeyMismatch);
        }
        let signature = identity.sign(&record.signed_message());
        Ok(SignedRecord { record, signature })
    }

    /// Checks the name, the bounds, the signature by `record.signing_key`, and that the
    /// record has not expired at `now_unix`.
    pub fn verify(&self, now_unix: u64) -> Result<(), NameError> {
        self.record.check_shape()?;
        let msg = self.record.signed_message();
        if !verify_signature(&self.record.signing_key, &msg, &self.signature) {
            return Err(NameError::BadSignature);
        }
        if self.record.is_expired(now_unix) {
            return Err(NameError::Expired);
        }
        Ok(())
    }

    /// The wire encoding (see the module documentation).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.encode_into(&mut out);
        out
    }

    /// Appends the wire encoding to `out`.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        out.put_u8(RECORD_VERSION);
        self.record.encode_into(out);
        out.put_slice(&self.signature);
    }

    /// Parses the wire encoding. Checks the structure and bounds only: call
    /// [`verify`](Self::verify) before trusting the record.
    pub fn decode(bytes: &[u8]) -> Result<SignedRecord, NameError> {
        let mut r = Reader::new(bytes);
        let record = SignedRecord::decode_from(&mut r)?;
        r.finish("signed record")?;
        Ok(record)
    }

    /// Parses one encoded record from the front of `r`.
    pub(crate) fn decode_from(r: &mut Reader<'_>) -> Result<SignedRecord, NameError> {
        let version = r.u8("record version")?;
        if version != RECORD_VERSION {
            return Err(NameError::Malformed(format!("unsupported record version {version}")));
        }
        let record = NameRecord::decode_from(r)?;
        let signature = r.array("record signature")?;
        Ok(SignedRecord { record, signature })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: u64 = 1_700_000_000;

    fn record_for(id: &Identity, name: &str) -> NameRecord {
        let public = id.public();
        NameRecord {
            name: name.into(),
            signing_key: public.signing,
            noise_key: public.noise,
            addrs: vec!["192.0.2.7:4000".parse().unwrap(), "[2001:db8::1]:4001".parse().unwrap()],
            relays: vec!["relay.example:7451".into()],
            seq: 3,
            expires: NOW + 3600,
        }
    }

    fn alice() -> (Identity, SignedRecord) {
        let id = Identity::from_seed([1; 32]);
        let signed = SignedRecord::sign(record_for(&id, "alice.example"), &id).unwrap();
        (id, signed)
    }

    #[test]
    fn signed_records_verify_and_round_trip() {
        let (id, signed) = alice();
        assert_eq!(signed.verify(NOW), Ok(()));
        assert_eq!(signed.record.public(), id.public());
        let decoded = SignedRecord::decode(&signed.encode()).unwrap();
        assert_eq!(decoded, signed);
        assert_eq!(decoded.verify(NOW), Ok(()));
    }

    #[test]
    fn every_tampered_field_breaks_the_signature() {
        let (_, signed) = alice();
        let other = Identity::from_seed([9; 32]).public();
        type Tamper<'a> = Box<dyn Fn(&mut NameRecord) + 'a>;
        let tamperings: Vec<Tamper<'_>> = vec![
            Box::new(|r| r.name = "mallory.example".into()),
            Box::new(|r| r.noise_key = other.noise),
            Box::new(|r| r.addrs[0] = "203.0.113.9:4000".parse().unwrap()),
            Box::new(|r| r.addrs.push("203.0.113.9:4000".parse().unwrap())),
            Box::new(|r| r.relays.clear()),
            Box::new(|r| r.seq += 1),
            Box::new(|r| r.expires += 1),
        ];
        for (i, tamper) in tamperings.iter().enumerate() {
            let mut bad = signed.clone();
            tamper(&mut bad.record);
            assert_eq!(bad.verify(NOW), Err(NameError::BadSignature), "tampering #{i}");
        }
        let mut bad = signed.clone();
        bad.signature[10] ^= 1;
        assert_eq!(bad.verify(NOW), Err(NameError::BadSignature));
    }

    #[test]
    fn a_record_signed_by_another_key_is_refused() {
        let (id, signed) = alice();
        let mallory = Identity::from_seed([2; 32]);
        // Mallory cannot sign a record carrying Alice's keys...
        assert_eq!(
            SignedRecord::sign(record_for(&id, "alice.example"), &mallory),
            Err(NameError::KeyMismatch)
        );
        // ...and her signature pasted onto Alice's record does not verify.
        let forged = SignedRecord {
            record: signed.record.clone(),
            signature: mallory.sign(&signed.record.signed_message()),
        };
        assert_eq!(forged.verify(NOW), Err(NameError::BadSignature));
        // Only the signing key has to match for the check in `sign`: noise key too.
        let mut half = record_for(&id, "alice.example");
        half.noise_key = mallory.public().noise;
        assert_eq!(SignedRecord::sign(half, &id), Err(NameError::KeyMismatch));
    }

    #[test]
    fn expiry_is_checked_after_the_signature() {
        let (_, signed) = alice();
        let expires = signed.record.expires;
        assert_eq!(signed.verify(expires - 1), Ok(()));
        assert_eq!(signed.verify(expires), Err(NameError::Expired));
        let mut forged = signed.clone();
        forged.record.seq += 1;
        assert_eq!(forged.verify(expires + 10), Err(NameError::BadSignature));
    }

    #[test]
    fn name_rules() {
        let long_label = "a".repeat(63);
        let ok_long = [long_label.as_str(); 4].join(".")[..253].to_string();
        for ok in ["a", "alice", "alice.example", "a-b.c-d", "0", "x1.y2", &long_label, &ok_long] {
            assert_eq!(validate_name(ok), Ok(()), "{ok:?}");
        }
        let too_long_label = "a".repeat(64);
        let too_long_name = format!("{ok_long}a");
        let cases: [(&str, &str); 11] = [
            ("", "empty"),
            ("Alice", "lowercase"),
            ("alice_1", "a-z, 0-9"),
            ("al ice", "a-z, 0-9"),
            ("älice", "a-z, 0-9"),
            (".alice", "'.'"),
            ("alice.", "'.'"),
            ("a..b", "'..'"),
            ("-alice", "'-'"),
            ("alice-.x", "'-'"),
            (&too_long_label, "63"),
        ];
        for (bad, why) in cases {
            match validate_name(bad) {
                Err(NameError::InvalidName { name, reason }) => {
                    assert_eq!(name, bad);
                    assert!(reason.contains(why), "{bad:?}: {reason}");
                }
                other => panic!("{bad:?} accepted: {other:?}"),
            }
        }
        assert!(matches!(
            validate_name(&too_long_name),
            Err(NameError::InvalidName { reason, .. }) if reason.contains("253")
        ));
        let msg = validate_name("Alice").unwrap_err().to_string();
        assert_eq!(msg, "invalid name \"Alice\": names are lowercase");
    }

    #[test]
    fn bounds_are_enforced_by_sign_verify_and_decode() {
        let id = Identity::from_seed([1; 32]);
        let mut rec = record_for(&id, "alice");
        rec.addrs = vec!["192.0.2.1:1".parse().unwrap(); MAX_ADDRS + 1];
        assert!(matches!(SignedRecord::sign(rec.clone(), &id), Err(NameError::Malformed(_))));
        let oversized = SignedRecord { record: rec, signature: [0; 64] };
        assert!(matches!(oversized.verify(NOW), Err(NameError::Malformed(_))));
        assert!(matches!(SignedRecord::decode(&oversized.encode()), Err(NameError::Malformed(_))));

        let mut rec = record_for(&id, "alice");
        rec.relays = vec!["r".repeat(MAX_RELAY_LEN + 1)];
        assert!(matches!(SignedRecord::sign(rec.clone(), &id), Err(NameError::Malformed(_))));
        let oversized = SignedRecord { record: rec, signature: [0; 64] };
        assert!(matches!(SignedRecord::decode(&oversized.encode()), Err(NameError::Malformed(_))));

        let mut rec = record_for(&id, "alice");
        rec.relays = vec![String::new()];
        assert!(matches!(SignedRecord::sign(rec, &id), Err(NameError::Malformed(_))));

        let mut rec = record_for(&id, "alice");
        rec.relays = vec!["r".into(); MAX_RELAYS + 1];
        assert!(matches!(SignedRecord::sign(rec, &id), Err(NameError::Malformed(_))));

        let rec = record_for(&id, "Alice");
        assert!(matches!(SignedRecord::sign(rec, &id), Err(NameError::InvalidName { .. })));
    }

    #[test]
    fn truncated_extended_and_misversioned_encodings_are_refused() {
        let (_, signed) = alice();
        let bytes = signed.encode();
        for len in 0..bytes.len() {
            assert!(
                matches!(SignedRecord::decode(&bytes[..len]), Err(NameError::Malformed(_))),
                "prefix of {len} bytes"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(SignedRecord::decode(&longer), Err(NameError::Malformed(_))));
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert_eq!(
            SignedRecord::decode(&v2),
            Err(NameError::Malformed("unsupported record version 2".into()))
        );
    }

    fn arb_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
        ]
    }

    prop_compose! {
        fn arb_signed()(
            name in "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\\.[a-z0-9]{1,10}){0,3}",
            signing_key in any::<[u8; 32]>(),
            noise_key in any::<[u8; 32]>(),
            addrs in prop::collection::vec(arb_addr(), 0..=MAX_ADDRS),
            relays in prop::collection::vec("\\PC{1,60}", 0..=MAX_RELAYS),
            seq in any::<u64>(),
            expires in any::<u64>(),
            sig in prop::collection::vec(any::<u8>(), 64),
        ) -> SignedRecord {
            let mut signature = [0u8; 64];
            signature.copy_from_slice(&sig);
            SignedRecord {
                record: NameRecord { name, signing_key, noise_key, addrs, relays, seq, expires },
                signature,
            }
        }
    }

    proptest! {
        #[test]
        fn encoding_round_trips(signed in arb_signed()) {
            prop_assert_eq!(validate_name(&signed.record.name), Ok(()));
            let bytes = signed.encode();
            prop_assert_eq!(SignedRecord::decode(&bytes), Ok(signed));
        }

        #[test]
        fn decoding_random_bytes_never_panics_and_is_canonical(
            bytes in prop::collection::vec(any::<u8>(), 0..600),
        ) {
            if let Ok(decoded) = SignedRecord::decode(&bytes) {
                prop_assert_eq!(decoded.encode(), bytes);
            }
        }

        #[test]
        fn mutated_encodings_never_verify(
            index in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let (_, signed) = alice();
            let mut bytes = signed.encode();
            let i = index.index(bytes.len());
            bytes[i] ^= flip;
            // Either the bytes no longer parse or the parsed record fails verification.
            if let Ok(decoded) = SignedRecord::decode(&bytes) {
                prop_assert!(decoded.verify(NOW).is_err());
            }
        }
    }
}
