//! What the workspace's tests share, so that every test makes its payloads the same way:
//! one deterministic data generator, SHA-256 of a buffer, and test logging.

use sha2::{Digest, Sha256};

/// `len` pseudo-random bytes, the same for the same `seed` on every run and machine
/// (xorshift64*, eight bytes per step). Different seeds give unrelated bytes, and
/// `data(n, seed)` is a prefix of `data(m, seed)` when `n <= m`. Fast enough for
/// payloads of many megabytes.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Sends `tracing` output to the test's captured output, filtered by `RUST_LOG`
/// (default: warnings). Safe to call from every test.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_deterministic_and_prefix_stable() {
        assert_eq!(data(1000, 7), data(1000, 7));
        assert_eq!(data(13, 7)[..], data(1000, 7)[..13]);
        assert_ne!(data(64, 1), data(64, 2));
        assert!(data(0, 3).is_empty());
        assert_eq!(data(5, 3).len(), 5);
    }

    #[test]
    fn sha256_of_nothing() {
        let hex: String = sha256(b"").iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
