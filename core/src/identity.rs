//! Identities: one secret seed per endpoint, from which both long-term keys derive.
//!
//! An endpoint needs two keys: an Ed25519 key that signs its name records (so a name
//! server cannot forge them) and an X25519 key that is its Noise static key (so peers can
//! authenticate it in the handshake). Deriving both from one 32-byte seed keeps the key
//! file to a single secret, and the domain-separated HKDF labels keep the two keys
//! independent.

use std::fmt;
use std::io::Write as _;
use std::path::Path;

use ed25519_dalek::Signer as _;
use hkdf::Hkdf;
use sha2::Sha256;

/// Length of the secret seed in a key file.
pub const SEED_LEN: usize = 32;

const KEY_FILE_HEADER: &str = "msocket-key v1";

/// Errors while creating, loading or saving an identity.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The key file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The file involved.
        path: String,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The key file exists but is not a msocket key file.
    #[error("key file {path} is malformed: {reason}")]
    Malformed {
        /// The file involved.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `save` refuses to replace an existing key.
    #[error("key file {0} already exists (refusing to overwrite a key)")]
    Exists(String),
    /// The operating system's random source failed.
    #[error("no randomness available: {0}")]
    Random(String),
}

/// The public half of an identity: what peers and name records carry.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicIdentity {
    /// Ed25519 key that signs name records.
    pub signing: [u8; 32],
    /// X25519 Noise static key.
    pub noise: [u8; 32],
}

impl PublicIdentity {
    /// The printable fingerprint of both keys: [`Fingerprint`] in its usual form, 32 hex
    /// digits.
    pub fn fingerprint(&self) -> String {
        Fingerprint::of(self).to_string()
    }

    fn digest(&self) -> [u8; 32] {
        use sha2::Digest as _;
        let mut h = Sha256::new();
        h.update(self.signing);
        h.update(self.noise);
        h.finalize().into()
    }
}

/// What a user writes to say which key a peer must hold: a prefix of the SHA-256 of its
/// two public keys, in hex.
///
/// It is printed with [`PRINTED_FINGERPRINT_DIGITS`] digits (128 bits: finding another key
/// with the same fingerprint takes about 2^128 key generations). Parsing accepts from that
/// many up to all 64 digits, in either case; a shorter prefix is refused rather than
/// silently weakening the check.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    /// The prefix's bytes (16 to 32) and, for an odd digit count, the last half byte.
    bytes: Vec<u8>,
    odd_nibble: Option<u8>,
}

/// How many hex digits a printed [`Fingerprint`] has, and the fewest a parsed one may have.
pub const PRINTED_FINGERPRINT_DIGITS: usize = 32;

/// Why a string is not a [`Fingerprint`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FingerprintError {
    /// Fewer than [`PRINTED_FINGERPRINT_DIGITS`] or more than 64 digits.
    #[error(
        "a key fingerprint has {PRINTED_FINGERPRINT_DIGITS} to 64 hex digits, this one has {0} \
         (msocket keygen and msocket listen print the full fingerprint)"
    )]
    Length(usize),
    /// A character that is not a hex digit.
    #[error("a key fingerprint is hex digits only, found {0:?}")]
    NotHex(char),
}

impl Fingerprint {
    /// The fingerprint of `public`, as printed.
    pub fn of(public: &PublicIdentity) -> Fingerprint {
        Fingerprint { bytes: public.digest()[..PRINTED_FINGERPRINT_DIGITS / 2].to_vec(), odd_nibble: None }
    }

    /// Whether `public`'s keys have this fingerprint.
    pub fn matches(&self, public: &PublicIdentity) -> bool {
        let digest = public.digest();
        digest.starts_with(&self.bytes)
            && self.odd_nibble.is_none_or(|n| digest[self.bytes.len()] >> 4 == n)
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = FingerprintError;

    fn from_str(s: &str) -> Result<Fingerprint, FingerprintError> {
        if let Some(c) = s.chars().find(|c| !c.is_ascii_hexdigit()) {
            return Err(FingerprintError::NotHex(c));
        }
        if !(PRINTED_FINGERPRINT_DIGITS..=64).contains(&s.len()) {
            return Err(FingerprintError::Length(s.len()));
        }
        let even = s.len() & !1;
        let bytes = hex::decode(&s[..even]).map_err(|_| FingerprintError::NotHex('?'))?;
        let odd_nibble = s[even..].chars().next().and_then(|c| c.to_digit(16)).map(|d| d as u8);
        Ok(Fingerprint { bytes, odd_nibble })
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.bytes))?;
        match self.odd_nibble {
            Some(n) => write!(f, "{n:x}"),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl fmt::Debug for PublicIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicIdentity({})", self.fingerprint())
    }
}

/// A secret identity: the seed and the two keys derived from it.
#[derive(Clone)]
pub struct Identity {
    seed: [u8; SEED_LEN],
    signing: ed25519_dalek::SigningKey,
    noise_secret: [u8; 32],
    public: PublicIdentity,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.public.fingerprint())
    }
}

impl Identity {
    /// A new identity from the operating system's random source.
    pub fn generate() -> Result<Identity, IdentityError> {
        let mut seed = [0u8; SEED_LEN];
        getrandom::getrandom(&mut seed).map_err(|e| IdentityError::Random(e.to_string()))?;
        Ok(Identity::from_seed(seed))
    }

    /// The identity a seed determines (deterministic: tests use fixed seeds).
    pub fn from_seed(seed: [u8; SEED_LEN]) -> Identity {
        let hk = Hkdf::<Sha256>::new(Some(b"msocket identity"), &seed);
        let mut ed_seed = [0u8; 32];
        hk.expand(b"ed25519 signing key", &mut ed_seed)
            .expect("32 bytes is a valid HKDF length");
        let mut noise_secret = [0u8; 32];
        hk.expand(b"x25519 noise static key", &mut noise_secret)
            .expect("32 bytes is a valid HKDF length");
        let signing = ed25519_dalek::SigningKey::from_bytes(&ed_seed);
        let noise_public =
            x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(noise_secret));
        let public = PublicIdentity {
            signing: signing.verifying_key().to_bytes(),
            noise: noise_public.to_bytes(),
        };
        Identity { seed, signing, noise_secret, public }
    }

    /// The public keys.
    pub fn public(&self) -> PublicIdentity {
        self.public
    }

    /// Signs `msg` with the Ed25519 key.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.signing.sign(msg).to_bytes()
    }

    /// The X25519 secret for the Noise handshake.
    pub(crate) fn noise_secret(&self) -> &[u8; 32] {
        &self.noise_secret
    }

    /// The key file's text: a header line, the seed, and the public keys as comments.
    pub fn to_key_file(&self) -> String {
        format!(
            "{KEY_FILE_HEADER}\nseed {}\n# signing {}\n# noise {}\n# fingerprint {}\n",
            hex::encode(self.seed),
            hex::encode(self.public.signing),
            hex::encode(self.public.noise),
            self.public.fingerprint()
        )
    }

    /// Parses a key file's text. `path` only names the file in errors.
    pub fn from_key_file(text: &str, path: &str) -> Result<Identity, IdentityError> {
        let malformed = |reason| IdentityError::Malformed { path: path.to_string(), reason };
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
        if lines.next() != Some(KEY_FILE_HEADER) {
            return Err(malformed("first line is not `msocket-key v1`"));
        }
        let seed_hex = lines
            .next()
            .and_then(|l| l.strip_prefix("seed "))
            .ok_or_else(|| malformed("missing `seed` line"))?;
        let bytes = hex::decode(seed_hex.trim()).map_err(|_| malformed("seed is not hex"))?;
        let seed: [u8; SEED_LEN] =
            bytes.try_into().map_err(|_| malformed("seed is not 32 bytes"))?;
        Ok(Identity::from_seed(seed))
    }

    /// Loads an identity from a key file.
    pub fn load(path: &Path) -> Result<Identity, IdentityError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|source| IdentityError::Io { path: shown.clone(), source })?;
        Identity::from_key_file(&text, &shown)
    }

    /// Writes a new key file readable only by its owner; never replaces an existing file.
    pub fn save(&self, path: &Path) -> Result<(), IdentityError> {
        let shown = path.display().to_string();
        let io = |source| IdentityError::Io { path: shown.clone(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let mut file = match opts.open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(IdentityError::Exists(shown))
            }
            Err(e) => return Err(io(e)),
        };
        file.write_all(self.to_key_file().as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)
    }
}

/// Checks an Ed25519 signature made by [`Identity::sign`], strictly: a key of small order
/// (such as all zeros) is refused outright, and so are signatures whose `R` is of small
/// order or not canonical. The lax check admits an all-zero key with an all-zero signature
/// for every message, which would let anyone "sign" a name record.
pub fn verify_signature(signing_key: &[u8; 32], msg: &[u8], signature: &[u8; 64]) -> bool {
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(signing_key) else {
        return false;
    };
    !key.is_weak() && key.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(signature)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_determines_keys_and_file_round_trips() {
        let id = Identity::from_seed([7; 32]);
        let again = Identity::from_key_file(&id.to_key_file(), "mem").unwrap();
        assert_eq!(id.public(), again.public());
        assert_ne!(id.public(), Identity::from_seed([8; 32]).public());
        assert_ne!(id.public().signing, id.public().noise);
    }

    #[test]
    fn small_order_keys_and_signatures_are_refused() {
        // The all-zero encoding (a point of order 4) and the identity point (y = 1) have
        // small order: the lax check passes the all-zero key with the all-zero signature
        // for about one message in four, and the identity key with R = identity, s = 0 for
        // every message.
        let mut identity_point = [0u8; 32];
        identity_point[0] = 1;
        let mut identity_sig = [0u8; 64];
        identity_sig[..32].copy_from_slice(&identity_point);
        for n in 0..64u32 {
            let msg = format!("msocket record {n}");
            assert!(!verify_signature(&[0u8; 32], msg.as_bytes(), &[0u8; 64]), "all-zero key, {msg}");
            assert!(!verify_signature(&identity_point, msg.as_bytes(), &identity_sig), "identity key, {msg}");
        }
        let id = Identity::from_seed([7; 32]);
        let mut sig = id.sign(b"hello");
        assert!(verify_signature(&id.public().signing, b"hello", &sig));
        sig[..32].copy_from_slice(&identity_point);
        assert!(!verify_signature(&id.public().signing, b"hello", &sig), "a small-order R");
    }

    #[test]
    fn signatures_verify_only_for_the_signed_message_and_key() {
        let id = Identity::from_seed([1; 32]);
        let sig = id.sign(b"hello");
        assert!(verify_signature(&id.public().signing, b"hello", &sig));
        assert!(!verify_signature(&id.public().signing, b"hellO", &sig));
        let other = Identity::from_seed([2; 32]);
        assert!(!verify_signature(&other.public().signing, b"hello", &sig));
    }

    #[test]
    fn fingerprints_parse_in_any_case_and_match_only_their_keys() {
        let a = Identity::from_seed([1; 32]).public();
        let b = Identity::from_seed([2; 32]).public();
        let printed = a.fingerprint();
        assert_eq!(printed.len(), PRINTED_FINGERPRINT_DIGITS);
        let full = hex::encode(a.digest());
        for text in [printed.clone(), printed.to_uppercase(), full.clone(), full[..33].to_string()] {
            let fp: Fingerprint = text.parse().unwrap();
            assert!(fp.matches(&a), "{text}");
            assert!(!fp.matches(&b), "{text}");
            assert_eq!(fp.to_string(), text.to_lowercase());
        }
        // The odd last digit counts.
        let mut wrong_last = full[..33].to_string();
        let last = wrong_last.pop().unwrap().to_digit(16).unwrap();
        wrong_last.push(char::from_digit((last + 1) % 16, 16).unwrap());
        assert!(!wrong_last.parse::<Fingerprint>().unwrap().matches(&a));
        assert_eq!(full[..16].parse::<Fingerprint>(), Err(FingerprintError::Length(16)));
        assert_eq!(format!("{full}0").parse::<Fingerprint>(), Err(FingerprintError::Length(65)));
        assert_eq!(format!("{}g", &full[..40]).parse::<Fingerprint>(), Err(FingerprintError::NotHex('g')));
        assert_eq!("é".repeat(20).parse::<Fingerprint>(), Err(FingerprintError::NotHex('é')));
    }

    #[test]
    fn malformed_key_files_are_refused() {
        for text in ["", "msocket-key v2\nseed 00", "msocket-key v1\nseed zz", "msocket-key v1\nseed 0011"] {
            assert!(matches!(
                Identity::from_key_file(text, "t"),
                Err(IdentityError::Malformed { .. })
            ));
        }
    }

    #[test]
    fn save_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/key");
        let id = Identity::from_seed([3; 32]);
        id.save(&path).unwrap();
        assert_eq!(Identity::load(&path).unwrap().public(), id.public());
        assert!(matches!(id.save(&path), Err(IdentityError::Exists(_))));
    }
}
