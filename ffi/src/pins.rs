//! The app's pin store, seen from the core.
//!
//! The core remembers which keys each looked-up name was first seen with (its pin) and
//! refuses a record with other keys (see [`msocket::trust`]). On a phone the pins belong
//! in app storage so they outlive the process; the app implements the UDL's `PinStore`
//! over it and this adapter makes that the core's [`msocket::trust::PinStore`]. The app's
//! store sees plain bytes ([`PinnedKeys`]); whatever it throws or returns wrongly (keys
//! that are not 32 bytes) becomes [`PinError::Store`] saying what happened, which fails
//! that connect: trusting the name service instead would defeat the pin. A panic here is
//! caught.

use msocket::trust::{Pin, PinError};
use msocket::PublicIdentity;

use crate::error::{panic_message, CallbackError, MsocketError};
use crate::PinStore;

/// The UDL's `PinnedKeys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedKeys {
    pub signing_key: Vec<u8>,
    pub noise_key: Vec<u8>,
    pub seq: u64,
}

impl From<Pin> for PinnedKeys {
    fn from(pin: Pin) -> Self {
        PinnedKeys { signing_key: pin.keys.signing.to_vec(), noise_key: pin.keys.noise.to_vec(), seq: pin.seq }
    }
}

impl PinnedKeys {
    /// The core's pin, if both keys are 32 bytes; otherwise what is wrong, in words.
    pub(crate) fn to_core(&self) -> Result<Pin, String> {
        let key = |bytes: &[u8], what: &str| -> Result<[u8; 32], String> {
            bytes.try_into().map_err(|_| format!("its {what} is {} bytes, not 32", bytes.len()))
        };
        Ok(Pin {
            keys: PublicIdentity { signing: key(&self.signing_key, "signing_key")?, noise: key(&self.noise_key, "noise_key")? },
            seq: self.seq,
        })
    }
}

/// The fingerprint of `pin`'s keys (the UDL's `pinned_fingerprint`).
pub fn pinned_fingerprint(pin: PinnedKeys) -> Result<String, MsocketError> {
    crate::error::guard("pinned_fingerprint", || {
        let pin = pin.to_core().map_err(|e| MsocketError::InvalidArgument(format!("not a pin: {e}")))?;
        Ok(pin.keys.fingerprint())
    })
}

/// Wraps the app's [`PinStore`] callback as the core's pin store.
pub(crate) struct AppPins(pub(crate) Box<dyn PinStore>);

impl std::fmt::Debug for AppPins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppPins")
    }
}

impl AppPins {
    /// Calls the app's store, turning what it throws (or a panic) into a store error.
    fn call<T>(&self, what: &str, name: &str, f: impl FnOnce(&dyn PinStore) -> Result<T, CallbackError>) -> Result<T, PinError> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&*self.0))) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(CallbackError::Failed { reason })) => {
                tracing::warn!(name, reason, "the app's pin store failed to {what}");
                Err(PinError::Store(format!("the app's pin store failed to {what} {name}: {reason}")))
            }
            Err(payload) => {
                let reason = panic_message(&*payload);
                tracing::error!(name, reason, "the app's pin store panicked");
                Err(PinError::Store(format!("the app's pin store panicked trying to {what} {name}: {reason}")))
            }
        }
    }
}

impl msocket::trust::PinStore for AppPins {
    fn get(&self, name: &str) -> Result<Option<Pin>, PinError> {
        let Some(pin) = self.call("read the pin of", name, |s| s.get(name.to_string()))? else {
            return Ok(None);
        };
        pin.to_core().map(Some).map_err(|e| {
            PinError::Store(format!(
                "the app's pin store returned a pin of {name} that is not one: {e} (store the bytes set() \
                 was given, or remove the pin)"
            ))
        })
    }

    fn set(&self, name: &str, pin: Pin) -> Result<(), PinError> {
        self.call("pin", name, |s| s.set(name.to_string(), pin.into()))
    }

    fn remove(&self, name: &str) -> Result<(), PinError> {
        self.call("remove the pin of", name, |s| s.remove(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use msocket::trust::PinStore as _;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// An app store with a switch to fail, and room for a bad pin.
    #[derive(Default)]
    struct Store {
        pins: Mutex<HashMap<String, PinnedKeys>>,
        fail: Mutex<Option<String>>,
    }

    struct Handle(std::sync::Arc<Store>);

    impl Handle {
        fn check(&self) -> Result<(), CallbackError> {
            let fail = self.0.fail.lock().unwrap().clone();
            match fail {
                Some(reason) if reason == "panic" => panic!("the store broke"),
                Some(reason) => Err(CallbackError::Failed { reason }),
                None => Ok(()),
            }
        }
    }

    impl PinStore for Handle {
        fn get(&self, name: String) -> Result<Option<PinnedKeys>, CallbackError> {
            self.check()?;
            Ok(self.0.pins.lock().unwrap().get(&name).cloned())
        }
        fn set(&self, name: String, pin: PinnedKeys) -> Result<(), CallbackError> {
            self.check()?;
            self.0.pins.lock().unwrap().insert(name, pin);
            Ok(())
        }
        fn remove(&self, name: String) -> Result<(), CallbackError> {
            self.check()?;
            self.0.pins.lock().unwrap().remove(&name);
            Ok(())
        }
    }

    fn pin(seed: u8, seq: u64) -> Pin {
        Pin { keys: msocket::Identity::from_seed([seed; 32]).public(), seq }
    }

    #[test]
    fn pins_round_trip_through_the_app_store() {
        let store = std::sync::Arc::new(Store::default());
        let pins = AppPins(Box::new(Handle(store.clone())));
        assert_eq!(pins.get("a.b").unwrap(), None);
        pins.set("a.b", pin(1, 7)).unwrap();
        assert_eq!(store.pins.lock().unwrap()["a.b"].seq, 7);
        assert_eq!(pins.get("a.b").unwrap(), Some(pin(1, 7)));
        pins.remove("a.b").unwrap();
        assert_eq!(pins.get("a.b").unwrap(), None);
        let keys = PinnedKeys::from(pin(2, 1));
        assert_eq!(pinned_fingerprint(keys).unwrap(), pin(2, 1).keys.fingerprint());
    }

    #[test]
    fn a_failing_store_or_a_bad_pin_is_a_store_error_never_a_panic() {
        let store = std::sync::Arc::new(Store::default());
        let pins = AppPins(Box::new(Handle(store.clone())));
        *store.fail.lock().unwrap() = Some("disk full".into());
        let e = pins.set("a.b", pin(1, 7)).unwrap_err();
        assert!(matches!(&e, PinError::Store(m) if m.contains("failed to pin a.b: disk full")), "{e}");
        assert!(matches!(pins.get("a.b"), Err(PinError::Store(m)) if m.contains("read the pin of a.b")));
        *store.fail.lock().unwrap() = Some("panic".into());
        assert!(matches!(pins.remove("a.b"), Err(PinError::Store(m)) if m.contains("the store broke")));
        *store.fail.lock().unwrap() = None;

        let mut bad = PinnedKeys::from(pin(1, 7));
        bad.noise_key.pop();
        store.pins.lock().unwrap().insert("a.b".into(), bad.clone());
        let e = pins.get("a.b").unwrap_err();
        assert!(matches!(&e, PinError::Store(m) if m.contains("a.b") && m.contains("noise_key is 31 bytes, not 32")), "{e}");
        assert!(matches!(pinned_fingerprint(bad), Err(MsocketError::InvalidArgument(m)) if m.contains("31 bytes")));
    }
}
