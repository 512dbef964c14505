//! The platform's socket binder, seen from the core.
//!
//! On a phone, choosing a source address is not always enough to pick the network a
//! socket uses: Android routes per `Network` and wants each socket bound to one
//! (`Network.bindSocket`), iOS has `IP_BOUND_IF`. The core calls its
//! [`msocket::SocketBinder`] for every outgoing subflow's socket, bound to its local address
//! but not yet connected; this adapter hands the descriptor and the address to the app's
//! callback. The callback runs on a runtime worker while the subflow waits, so it must be
//! quick; whatever it throws fails just that subflow, and a panic here is caught.

use std::net::IpAddr;

use crate::error::{panic_message, CallbackError};
use crate::SocketBinder;

/// Wraps the app's [`SocketBinder`] callback as the core's binder.
pub(crate) struct AppBinder(pub(crate) Box<dyn SocketBinder>);

impl std::fmt::Debug for AppBinder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppBinder")
    }
}

impl msocket::SocketBinder for AppBinder {
    fn bind(&self, socket: msocket::RawSocket, local: IpAddr) -> std::io::Result<()> {
        #[cfg(unix)]
        let fd: i32 = socket;
        #[cfg(not(unix))]
        let fd: i32 = i32::try_from(socket)
            .map_err(|_| std::io::Error::other("socket handle does not fit the binder's descriptor type"))?;
        let call = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.0.bind_socket(fd, local.to_string())));
        match call {
            Ok(Ok(())) => Ok(()),
            Ok(Err(CallbackError::Failed { reason })) => {
                tracing::info!(%local, reason, "the app's socket binder refused a subflow socket");
                Err(std::io::Error::other(format!("the app's socket binder failed for {local}: {reason}")))
            }
            Err(payload) => Err(std::io::Error::other(format!(
                "the app's socket binder panicked for {local}: {}",
                panic_message(&*payload)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use msocket::SocketBinder as _;
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct Recorder {
        calls: Arc<Mutex<Vec<(i32, String)>>>,
        fail: bool,
    }

    impl SocketBinder for Recorder {
        fn bind_socket(&self, fd: i32, local_address: String) -> Result<(), CallbackError> {
            self.calls.lock().unwrap().push((fd, local_address));
            if self.fail {
                Err(CallbackError::Failed { reason: "no such network".into() })
            } else {
                Ok(())
            }
        }
    }

    struct Panics;
    impl SocketBinder for Panics {
        fn bind_socket(&self, _: i32, _: String) -> Result<(), CallbackError> {
            panic!("binder bug")
        }
    }

    #[test]
    fn the_callback_gets_the_descriptor_and_address_and_its_failure_fails_the_bind() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let ok = AppBinder(Box::new(Recorder { calls: calls.clone(), fail: false }));
        ok.bind(7, "192.0.2.7".parse().unwrap()).unwrap();
        assert_eq!(calls.lock().unwrap().as_slice(), &[(7, "192.0.2.7".to_string())]);
        let failing = AppBinder(Box::new(Recorder { calls, fail: true }));
        let e = failing.bind(8, "2001:db8::1".parse().unwrap()).unwrap_err();
        assert!(e.to_string().contains("2001:db8::1: no such network"), "{e}");
        let e = AppBinder(Box::new(Panics)).bind(9, "192.0.2.9".parse().unwrap()).unwrap_err();
        assert!(e.to_string().contains("panicked") && e.to_string().contains("binder bug"), "{e}");
    }
}
