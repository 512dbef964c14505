//! Sealed records: the unit that travels on a subflow after the handshake.
//!
//! ```text
//! record = len:u16  pn:u64  ciphertext[len]     (ciphertext = AEAD(frames), 16-byte tag)
//! ```
//! The packet number is the AEAD nonce, so it is authenticated without being encrypted.

use super::SessionKeys;

/// Clear bytes in front of every record's ciphertext.
pub(crate) const RECORD_HEADER_LEN: usize = 2 + 8;
const TAG_LEN: usize = 16;
/// Largest plaintext one record may carry (Noise messages are at most 65535 bytes).
pub(crate) const MAX_RECORD_PLAINTEXT: usize = u16::MAX as usize - TAG_LEN;

/// Why a record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RecordError {
    #[error("record of {0} bytes is over the limit")]
    TooLong(usize),
    #[error("record failed authentication (forged, corrupted or for another flow)")]
    Forged,
}

impl SessionKeys {
    /// Appends the sealed record for `plaintext` with packet number `pn` to `out`.
    pub(crate) fn seal(&self, pn: u64, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
        if plaintext.len() > MAX_RECORD_PLAINTEXT {
            return Err(RecordError::TooLong(plaintext.len()));
        }
        let len = plaintext.len() + TAG_LEN;
        out.extend_from_slice(&(len as u16).to_be_bytes());
        out.extend_from_slice(&pn.to_be_bytes());
        let start = out.len();
        out.resize(start + len, 0);
        let n = self
            .transport
            .write_message(pn, plaintext, &mut out[start..])
            .map_err(|_| RecordError::TooLong(plaintext.len()))?;
        debug_assert_eq!(n, len);
        Ok(())
    }

    /// Opens a record's ciphertext into `out`, returning the plaintext length.
    pub(crate) fn open(&self, pn: u64, ciphertext: &[u8], out: &mut [u8]) -> Result<usize, RecordError> {
        if ciphertext.len() < TAG_LEN || out.len() + TAG_LEN < ciphertext.len() {
            return Err(RecordError::Forged);
        }
        self.transport.read_message(pn, ciphertext, out).map_err(|_| RecordError::Forged)
    }
}

/// Splits a record header into (ciphertext length, packet number).
pub(crate) fn parse_header(h: &[u8; RECORD_HEADER_LEN]) -> (usize, u64) {
    let len = u16::from_be_bytes([h[0], h[1]]) as usize;
    let pn = u64::from_be_bytes(h[2..10].try_into().expect("8 bytes"));
    (len, pn)
}

#[cfg(test)]
mod tests {
    use super::super::handshake::tests::session_pair;
    use super::*;

    fn split(rec: &[u8]) -> (u64, &[u8]) {
        let (len, pn) = parse_header(rec[..RECORD_HEADER_LEN].try_into().unwrap());
        assert_eq!(rec.len(), RECORD_HEADER_LEN + len);
        (pn, &rec[RECORD_HEADER_LEN..])
    }

    #[test]
    fn records_open_out_of_order_and_only_with_their_pn() {
        let (c, s) = session_pair();
        let mut r1 = Vec::new();
        let mut r2 = Vec::new();
        c.seal(1, b"first", &mut r1).unwrap();
        c.seal(2, b"second", &mut r2).unwrap();
        let mut out = [0u8; 64];
        let (pn, ct) = split(&r2);
        let n = s.open(pn, ct, &mut out).unwrap();
        assert_eq!(&out[..n], b"second");
        let (pn, ct) = split(&r1);
        let n = s.open(pn, ct, &mut out).unwrap();
        assert_eq!(&out[..n], b"first");
        assert_eq!(s.open(2, ct, &mut out), Err(RecordError::Forged), "pn is authenticated");
        assert_eq!(c.open(1, ct, &mut out), Err(RecordError::Forged), "directions use distinct keys");
    }

    #[test]
    fn tampering_and_other_sessions_are_detected() {
        let (c, s) = session_pair();
        let (_, other) = session_pair();
        let mut rec = Vec::new();
        c.seal(7, b"payload", &mut rec).unwrap();
        let mut out = [0u8; 64];
        let (pn, ct) = split(&rec);
        assert_eq!(other.open(pn, ct, &mut out), Err(RecordError::Forged));
        let mut bad = ct.to_vec();
        bad[0] ^= 1;
        assert_eq!(s.open(pn, &bad, &mut out), Err(RecordError::Forged));
        assert_eq!(s.open(pn, &ct[..8], &mut out), Err(RecordError::Forged));
    }

    #[test]
    fn oversized_plaintext_is_refused() {
        let (c, _) = session_pair();
        let big = vec![0u8; MAX_RECORD_PLAINTEXT + 1];
        assert!(matches!(c.seal(1, &big, &mut Vec::new()), Err(RecordError::TooLong(_))));
        c.seal(1, &big[..MAX_RECORD_PLAINTEXT], &mut Vec::new()).unwrap();
    }
}
