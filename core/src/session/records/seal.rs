//! Sealed records: the unit that travels on a subflow after the handshake.
//!
//! ```text
//! record = len:u16  pn:u64  ciphertext[len]     (ciphertext = AES-256-GCM(frames) || tag[16])
//! ```
//! The packet number is the AEAD nonce (Noise's AESGCM nonce: four zero bytes, then the
//! number big-endian), so it is authenticated without being encrypted, and it picks the
//! key (one per epoch of numbers, see [`keys`](super::keys)). Records are sealed
//! and opened in place: the bytes a writer encoded become the ciphertext, and a record read
//! from the socket becomes the frames' plaintext without another copy.

use ring::aead::{Aad, Nonce, Tag};

use crate::session::SessionKeys;

/// Clear bytes in front of every record's ciphertext.
pub(crate) const RECORD_HEADER_LEN: usize = 2 + 8;
pub(crate) const TAG_LEN: usize = 16;
/// Largest plaintext one record may carry (ciphertext and tag fit the `u16` length).
pub(crate) const MAX_RECORD_PLAINTEXT: usize = u16::MAX as usize - TAG_LEN;

/// Why a record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RecordError {
    #[error("record of {0} bytes is over the limit")]
    TooLong(usize),
    #[error("record failed authentication (forged, corrupted or for another flow)")]
    Forged,
    #[error("packet number {0} is beyond the last one a flow may use")]
    PacketNumberTooLarge(u64),
}

fn nonce(pn: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&pn.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

impl SessionKeys {
    /// Seals one record in place with the key of its packet number's epoch. `record` is
    /// `RECORD_HEADER_LEN` bytes of room for the header, the plaintext, and `TAG_LEN`
    /// bytes of room for the tag; header and tag are written here.
    pub(crate) fn seal_record(&self, pn: u64, record: &mut [u8]) -> Result<(), RecordError> {
        let len = record.len().saturating_sub(RECORD_HEADER_LEN + TAG_LEN);
        if record.len() < RECORD_HEADER_LEN + TAG_LEN || len > MAX_RECORD_PLAINTEXT {
            return Err(RecordError::TooLong(len));
        }
        let key = self.send.sealing(pn).ok_or(RecordError::PacketNumberTooLarge(pn))?;
        let (header, rest) = record.split_at_mut(RECORD_HEADER_LEN);
        let (plain, tag_room) = rest.split_at_mut(len);
        let tag: Tag = key
            .seal_in_place_separate_tag(nonce(pn), Aad::empty(), plain)
            .map_err(|_| RecordError::TooLong(len))?;
        tag_room.copy_from_slice(tag.as_ref());
        header[..2].copy_from_slice(&((len + TAG_LEN) as u16).to_be_bytes());
        header[2..].copy_from_slice(&pn.to_be_bytes());
        Ok(())
    }

    /// Opens a record's ciphertext (tag included) in place; returns the plaintext length
    /// (the plaintext is `ciphertext[..len]`). Every failure counts towards the flow's
    /// forgery limit.
    pub(crate) fn open_record(&self, pn: u64, ciphertext: &mut [u8]) -> Result<usize, RecordError> {
        if ciphertext.len() < TAG_LEN {
            self.recv.count_forged();
            return Err(RecordError::Forged);
        }
        self.recv
            .opening(pn, |key| key.open_in_place(nonce(pn), Aad::empty(), ciphertext).map(|plain| plain.len()))
            .ok_or(RecordError::Forged)
    }
}

/// Splits a record header into (ciphertext length, packet number).
pub(crate) fn parse_header(h: &[u8]) -> (usize, u64) {
    let len = u16::from_be_bytes([h[0], h[1]]) as usize;
    let pn = u64::from_be_bytes(h[2..10].try_into().expect("8 bytes"));
    (len, pn)
}

#[cfg(test)]
mod tests {
    use crate::session::session_pair;
    use super::*;

    fn seal(keys: &SessionKeys, pn: u64, plain: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; RECORD_HEADER_LEN];
        buf.extend_from_slice(plain);
        buf.extend_from_slice(&[0u8; TAG_LEN]);
        keys.seal_record(pn, &mut buf).unwrap();
        buf
    }

    /// Opens a whole record; returns its plaintext.
    fn open(keys: &SessionKeys, rec: &[u8]) -> Result<Vec<u8>, RecordError> {
        let (len, pn) = parse_header(rec);
        assert_eq!(rec.len(), RECORD_HEADER_LEN + len);
        let mut ct = rec[RECORD_HEADER_LEN..].to_vec();
        let n = keys.open_record(pn, &mut ct)?;
        Ok(ct[..n].to_vec())
    }

    #[test]
    fn records_open_out_of_order_and_only_with_their_pn() {
        let (c, s) = session_pair();
        let r1 = seal(&c, 1, b"first");
        let r2 = seal(&c, 2, b"second");
        assert_eq!(open(&s, &r2).unwrap(), b"second");
        assert_eq!(open(&s, &r1).unwrap(), b"first");
        let mut moved = r1.clone();
        moved[2..10].copy_from_slice(&2u64.to_be_bytes());
        assert_eq!(open(&s, &moved), Err(RecordError::Forged), "pn is authenticated");
        assert_eq!(open(&c, &r1), Err(RecordError::Forged), "directions use distinct keys");
    }

    #[test]
    fn tampering_and_other_sessions_are_detected() {
        let (c, s) = session_pair();
        let (_, other) = session_pair();
        let rec = seal(&c, 7, b"payload");
        assert_eq!(open(&other, &rec), Err(RecordError::Forged));
        let mut bad = rec.clone();
        bad[RECORD_HEADER_LEN] ^= 1;
        assert_eq!(open(&s, &bad), Err(RecordError::Forged));
        let mut short = [0u8; 8];
        assert_eq!(s.open_record(7, &mut short), Err(RecordError::Forged));
    }

    #[test]
    fn oversized_plaintext_is_refused() {
        let (c, _) = session_pair();
        let mut buf = vec![0u8; RECORD_HEADER_LEN + MAX_RECORD_PLAINTEXT + 1 + TAG_LEN];
        assert!(matches!(c.seal_record(1, &mut buf), Err(RecordError::TooLong(_))));
        buf.truncate(RECORD_HEADER_LEN + u16::MAX as usize);
        c.seal_record(1, &mut buf).unwrap();
        assert!(matches!(c.seal_record(1, &mut [0u8; 20]), Err(RecordError::TooLong(0))));
    }
}
