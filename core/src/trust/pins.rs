//! Where the keys first seen for each name are kept.
//!
//! An endpoint asks its [`PinStore`] before it trusts a looked-up record. [`MemoryPins`]
//! forgets everything with the process (the default, fit for tests and servers that only
//! listen); [`PinFile`] keeps pins in a text file like ssh's `known_hosts` (the CLI's
//! choice); apps plug their own store in (the mobile SDK keeps pins in app storage).

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::identity::PublicIdentity;

/// What is remembered of a name: the keys seen first and the highest record sequence
/// number seen since.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pin {
    /// The keys the name belongs to.
    pub keys: PublicIdentity,
    /// The highest sequence number of a record of the name that was accepted.
    pub seq: u64,
}

/// A pin store failed; connecting to an unpinned name is refused rather than trusting the
/// name service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PinError {
    /// The pin file could not be read or written.
    #[error("pin file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A line of the pin file is not a pin.
    #[error("pin file {path}, line {line}: {reason} (fix or delete the line)")]
    Malformed {
        /// The file.
        path: String,
        /// The line number, from 1.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// The pin file is larger than any honest one.
    #[error("pin file {path} is over {max} bytes; refusing to read it")]
    TooLarge {
        /// The file.
        path: String,
        /// The limit.
        max: u64,
    },
    /// An application's store failed.
    #[error("pin store: {0}")]
    Store(String),
}

/// Keeps the pins of names (see the module docs). Implementations must be safe to call
/// from any thread; calls are short and may block briefly (a file write).
pub trait PinStore: Send + Sync + fmt::Debug {
    /// The pin of `name`, if there is one.
    fn get(&self, name: &str) -> Result<Option<Pin>, PinError>;
    /// Pins `name` (replacing its pin).
    fn set(&self, name: &str, pin: Pin) -> Result<(), PinError>;
    /// Forgets the pin of `name`, so the next lookup pins whatever it finds.
    fn remove(&self, name: &str) -> Result<(), PinError>;
}

/// Pins kept in memory only.
#[derive(Debug, Default)]
pub struct MemoryPins {
    pins: Mutex<BTreeMap<String, Pin>>,
}

impl MemoryPins {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Pin>> {
        self.pins.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl PinStore for MemoryPins {
    fn get(&self, name: &str) -> Result<Option<Pin>, PinError> {
        Ok(self.lock().get(name).copied())
    }

    fn set(&self, name: &str, pin: Pin) -> Result<(), PinError> {
        self.lock().insert(name.to_string(), pin);
        Ok(())
    }

    fn remove(&self, name: &str) -> Result<(), PinError> {
        self.lock().remove(name);
        Ok(())
    }
}

/// Pins kept in a text file, one name per line:
///
/// ```text
/// # msocket pins: NAME SIGNING-KEY NOISE-KEY SEQ
/// alice.phone 3b6a…(64 hex) 9f1c…(64 hex) 1733356800123
/// ```
///
/// Every change re-reads the file and replaces it atomically (a temporary file renamed
/// over it), so several processes sharing it lose at most a concurrent change, never the
/// file. A malformed line is an error naming it: pins are not silently dropped.
#[derive(Debug)]
pub struct PinFile {
    path: PathBuf,
    /// Serialises this process's read-modify-write cycles.
    writing: Mutex<()>,
}

/// Largest pin file read (about 16,000 names).
pub const MAX_PIN_FILE: u64 = 4 << 20;

const PIN_FILE_HEADER: &str = "# msocket pins: NAME SIGNING-KEY NOISE-KEY SEQ";

impl PinFile {
    /// A store in the file at `path` (created with its directories at the first pin).
    pub fn new(path: impl Into<PathBuf>) -> PinFile {
        PinFile { path: path.into(), writing: Mutex::new(()) }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn shown(&self) -> String {
        self.path.display().to_string()
    }

    fn io(&self) -> impl Fn(std::io::Error) -> PinError + '_ {
        move |source| PinError::Io { path: self.shown(), source }
    }

    /// Every pin in the file, by name.
    pub fn entries(&self) -> Result<BTreeMap<String, Pin>, PinError> {
        let text = match std::fs::metadata(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(self.io()(e)),
            Ok(meta) if meta.len() > MAX_PIN_FILE => {
                return Err(PinError::TooLarge { path: self.shown(), max: MAX_PIN_FILE })
            }
            Ok(_) => std::fs::read_to_string(&self.path).map_err(self.io())?,
        };
        let mut pins = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let malformed = |reason| PinError::Malformed { path: self.shown(), line: i + 1, reason };
            let (name, pin) = parse_line(line).map_err(malformed)?;
            pins.insert(name.to_string(), pin);
        }
        Ok(pins)
    }

    fn change(&self, apply: impl FnOnce(&mut BTreeMap<String, Pin>)) -> Result<(), PinError> {
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let mut pins = self.entries()?;
        apply(&mut pins);
        let mut text = format!("{PIN_FILE_HEADER}\n");
        for (name, pin) in &pins {
            text.push_str(&format!(
                "{name} {} {} {}\n",
                hex::encode(pin.keys.signing),
                hex::encode(pin.keys.noise),
                pin.seq
            ));
        }
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(self.io())?;
        }
        let tmp = self.path.with_extension(format!("tmp.{}", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let written = options.open(&tmp).and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.sync_all()
        });
        written.and_then(|()| std::fs::rename(&tmp, &self.path)).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            self.io()(e)
        })
    }
}

fn parse_line(line: &str) -> Result<(&str, Pin), &'static str> {
    let mut fields = line.split_ascii_whitespace();
    let (Some(name), Some(signing), Some(noise), Some(seq), None) =
        (fields.next(), fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err("expected four fields: name, signing key, noise key, sequence number");
    };
    crate::name::validate_name(name).map_err(|_| "not a valid name")?;
    let key = |hex_key: &str| -> Result<[u8; 32], &'static str> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_key, &mut out).map_err(|_| "a key is not 64 hex digits")?;
        Ok(out)
    };
    let keys = PublicIdentity { signing: key(signing)?, noise: key(noise)? };
    let seq = seq.parse().map_err(|_| "the sequence number is not a number")?;
    Ok((name, Pin { keys, seq }))
}

impl PinStore for PinFile {
    fn get(&self, name: &str) -> Result<Option<Pin>, PinError> {
        Ok(self.entries()?.remove(name))
    }

    fn set(&self, name: &str, pin: Pin) -> Result<(), PinError> {
        self.change(|pins| {
            pins.insert(name.to_string(), pin);
        })
    }

    fn remove(&self, name: &str) -> Result<(), PinError> {
        self.change(|pins| {
            pins.remove(name);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn pin(seed: u8, seq: u64) -> Pin {
        Pin { keys: Identity::from_seed([seed; 32]).public(), seq }
    }

    #[test]
    fn a_pin_file_keeps_pins_across_instances_and_replaces_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config/pins");
        let file = PinFile::new(&path);
        assert_eq!(file.get("alice.phone").unwrap(), None);
        file.set("alice.phone", pin(1, 10)).unwrap();
        file.set("bob.tv", pin(2, 20)).unwrap();
        file.set("alice.phone", pin(1, 11)).unwrap();
        let again = PinFile::new(&path);
        assert_eq!(again.get("alice.phone").unwrap(), Some(pin(1, 11)));
        assert_eq!(again.entries().unwrap().len(), 2);
        again.remove("bob.tv").unwrap();
        assert_eq!(file.get("bob.tv").unwrap(), None);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary files left: {leftovers:?}");
    }

    #[test]
    fn a_damaged_pin_file_is_an_error_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pins");
        let file = PinFile::new(&path);
        file.set("alice.phone", pin(1, 10)).unwrap();
        let good = std::fs::read_to_string(&path).unwrap();
        for bad in ["alice.phone 00 11 5", "bob.tv", "bad name! aa bb 1", &good.lines().nth(1).unwrap().replace(" 10", " ten")] {
            std::fs::write(&path, format!("{good}{bad}\n")).unwrap();
            match file.get("alice.phone") {
                Err(PinError::Malformed { line: 3, .. }) => {}
                other => panic!("{bad:?}: {other:?}"),
            }
            // A change does not overwrite what it cannot read.
            assert!(file.set("carol.tv", pin(3, 1)).is_err());
        }
        std::fs::write(&path, vec![b'#'; MAX_PIN_FILE as usize + 1]).unwrap();
        assert!(matches!(file.get("alice.phone"), Err(PinError::TooLarge { .. })));
    }
}
