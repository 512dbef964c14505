//! Record keys: a new AES-256-GCM key for every epoch of packet numbers, and the limits
//! that bound what one key and one flow may see.
//!
//! AES-GCM weakens with use: after `q` records of `l` blocks under one key, an observer's
//! advantage in telling the ciphertext from random grows as `2·(q·l)²/2^128` (RFC 9001,
//! appendix B.1.1). For records of up to 2^16 bytes (2^12 blocks) and the advantage of
//! 2^-57 that QUIC accepts, one key may seal at most 2^23 of them; a long-lived flow
//! passes that (at 4 KiB records, after 32 GiB). So the key follows from the packet
//! number: records numbered `[k·2^N, (k+1)·2^N)` are sealed under
//! `HKDF-Expand(direction secret, "msocket record key" || k)`, with `N` =
//! [`EPOCH_BITS`] (2^22 records per key, half the limit). Both ends derive it from the
//! number alone, so keys change without a round trip, and records of several epochs may
//! arrive on any subflow in any order, or again in a new record on another path: the
//! receiver derives the key of whatever epoch a record names, keeping a few (the current
//! epoch and its neighbours) and letting older ones go.
//!
//! Packet numbers stay below [`PN_LIMIT`] (2^62, like stream offsets): a sender that
//! would pass it ends the flow rather than reuse a nonce, and no key exists for a number
//! at or beyond it, so such a record is refused as forged.
//!
//! Forgeries are counted too: every record that fails authentication closes its subflow,
//! and once [`MAX_FORGED`] have failed on a flow, its keys are retired and the flow ends
//! (RFC 9001 §6.6 asks a QUIC endpoint to stop at its integrity limit, 2^52 for AES-GCM
//! with such records; see the protocol document for why ours is far lower).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hkdf::Hkdf;
use ring::aead::{LessSafeKey, UnboundKey, AES_256_GCM};
use sha2::Sha256;

/// Packet numbers are below this.
pub(crate) const PN_LIMIT: u64 = 1 << 62;
/// `2^EPOCH_BITS` records are sealed under one key.
pub(crate) const EPOCH_BITS: u32 = 22;
/// Records failing authentication on one flow before it ends.
pub(crate) const MAX_FORGED: u64 = 1 << 16;
/// Epoch keys kept at once: the current epoch's and its neighbours'.
const CACHED_EPOCHS: usize = 3;
const LABEL: &[u8] = b"msocket record key";

/// One direction's record keys.
pub(crate) struct RecordKeys {
    /// The direction's secret (a Noise transport key), used as an HKDF pseudorandom key.
    secret: Hkdf<Sha256>,
    epoch_bits: u32,
    /// Derived keys by epoch.
    cache: Mutex<Vec<(u64, Arc<LessSafeKey>)>>,
    /// Records that failed authentication (the receiving direction's).
    forged: AtomicU64,
    max_forged: u64,
}

impl std::fmt::Debug for RecordKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecordKeys(2^{} records per key, {} forged)", self.epoch_bits, self.forged())
    }
}

impl RecordKeys {
    pub(crate) fn new(secret: &[u8; 32]) -> RecordKeys {
        RecordKeys::with_limits(secret, EPOCH_BITS, MAX_FORGED)
    }

    /// Keys with other limits (tests cross epochs and reach the forgery limit quickly).
    pub(crate) fn with_limits(secret: &[u8; 32], epoch_bits: u32, max_forged: u64) -> RecordKeys {
        RecordKeys {
            secret: Hkdf::from_prk(secret).expect("a 32-byte secret is a valid pseudorandom key"),
            epoch_bits: epoch_bits.min(62),
            cache: Mutex::new(Vec::with_capacity(CACHED_EPOCHS + 1)),
            forged: AtomicU64::new(0),
            max_forged,
        }
    }

    fn epoch(&self, pn: u64) -> u64 {
        pn >> self.epoch_bits
    }

    fn derive(&self, epoch: u64) -> Arc<LessSafeKey> {
        let mut raw = [0u8; 32];
        let info = [LABEL, &epoch.to_be_bytes()[..]];
        self.secret.expand_multi_info(&info, &mut raw).expect("32 bytes is a valid HKDF length");
        Arc::new(LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &raw).expect("32-byte AES-256 key")))
    }

    fn cached(&self, epoch: u64) -> Option<Arc<LessSafeKey>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.iter().find(|(e, _)| *e == epoch).map(|(_, k)| k.clone())
    }

    /// Keeps `key` for `epoch`; beyond [`CACHED_EPOCHS`] the oldest epoch goes.
    fn remember(&self, epoch: u64, key: &Arc<LessSafeKey>) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.iter().any(|(e, _)| *e == epoch) {
            return;
        }
        cache.push((epoch, key.clone()));
        if cache.len() > CACHED_EPOCHS {
            let oldest = cache.iter().enumerate().min_by_key(|(_, (e, _))| *e).map(|(i, _)| i);
            if let Some(i) = oldest {
                cache.swap_remove(i);
            }
        }
    }

    /// The key that seals packet number `pn` (`None` at or beyond [`PN_LIMIT`]).
    pub(crate) fn sealing(&self, pn: u64) -> Option<Arc<LessSafeKey>> {
        if pn >= PN_LIMIT {
            return None;
        }
        let epoch = self.epoch(pn);
        Some(self.cached(epoch).unwrap_or_else(|| {
            let key = self.derive(epoch);
            self.remember(epoch, &key);
            key
        }))
    }

    /// Opens a record numbered `pn` with `open`, given the key of its epoch. A key derived
    /// for it is kept only once a record opened with it, so forged numbers cannot push
    /// the keys in use out. A failure is counted.
    pub(crate) fn opening<T, E>(&self, pn: u64, open: impl FnOnce(&LessSafeKey) -> Result<T, E>) -> Option<T> {
        let opened = (pn < PN_LIMIT).then(|| {
            let epoch = self.epoch(pn);
            match self.cached(epoch) {
                Some(key) => open(&key).ok(),
                None => {
                    let key = self.derive(epoch);
                    let opened = open(&key).ok();
                    if opened.is_some() {
                        self.remember(epoch, &key);
                    }
                    opened
                }
            }
        });
        let opened = opened.flatten();
        if opened.is_none() {
            self.count_forged();
        }
        opened
    }

    /// A record failed authentication before it could be tried (too short to hold a tag).
    pub(crate) fn count_forged(&self) {
        self.forged.fetch_add(1, Ordering::Relaxed);
    }

    /// Records that failed authentication so far.
    pub(crate) fn forged(&self) -> u64 {
        self.forged.load(Ordering::Relaxed)
    }

    /// Whether so many records failed authentication that the keys are retired.
    pub(crate) fn retired(&self) -> bool {
        self.forged() >= self.max_forged
    }

    /// Epochs whose keys are kept now, lowest first.
    #[cfg(test)]
    pub(crate) fn cached_epochs(&self) -> Vec<u64> {
        let mut epochs: Vec<u64> = self.cache.lock().unwrap().iter().map(|(e, _)| *e).collect();
        epochs.sort_unstable();
        epochs
    }
}
