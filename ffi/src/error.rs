//! The errors apps see, and how the core's errors map onto them.
//!
//! Apps branch on *what kind* of failure happened (retry later, ask the user for another
//! name, give up), so the foreign error is a flat enum of kinds, each with a message that
//! says what happened in words. The core's richer errors are folded into those kinds here,
//! in one place, so Kotlin and Swift agree.

use std::io;

use msocket::name::NameError;

/// An error of an SDK call (the UDL's `MsocketError`). The text is the message apps see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MsocketError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    BadUrl(String),
    #[error("{0}")]
    NameNotFound(String),
    #[error("{0}")]
    NameService(String),
    #[error("{0}")]
    KeyChanged(String),
    #[error("{0}")]
    WrongKey(String),
    #[error("{0}")]
    StaleRecord(String),
    #[error("{0}")]
    NotAllowed(String),
    #[error("{0}")]
    PinStore(String),
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    AlreadyListening(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Closed(String),
    #[error("{0}")]
    FlowFailed(String),
    #[error("{0}")]
    PeerAborted(String),
    #[error("{0}")]
    PeerForgotFlow(String),
    #[error("{0}")]
    NoPath(String),
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Cancelled(String),
    #[error("{0}")]
    Internal(String),
}

/// What an app's callback threw (the UDL's `CallbackError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error("{reason}")]
    Failed { reason: String },
}

/// Any other exception a callback throws arrives as this (never as a panic).
impl From<uniffi::UnexpectedUniFFICallbackError> for CallbackError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        CallbackError::Failed { reason: e.reason }
    }
}

impl From<NameError> for MsocketError {
    fn from(e: NameError) -> Self {
        let text = e.to_string();
        match e {
            NameError::NotFound(_) => MsocketError::NameNotFound(text),
            NameError::InvalidName { .. } => MsocketError::InvalidArgument(text),
            NameError::BadUrl { .. } => MsocketError::BadUrl(text),
            _ => MsocketError::NameService(text),
        }
    }
}

impl From<msocket::Error> for MsocketError {
    fn from(e: msocket::Error) -> Self {
        let text = e.to_string();
        match e {
            msocket::Error::Name(n) => n.into(),
            msocket::Error::KeyChanged { .. } => MsocketError::KeyChanged(text),
            msocket::Error::WrongKey { .. } => MsocketError::WrongKey(text),
            msocket::Error::StaleRecord { .. } => MsocketError::StaleRecord(text),
            msocket::Error::NotAllowed { .. } => MsocketError::NotAllowed(text),
            // A bad name or fingerprint in `NAME#FINGERPRINT`: the app's input.
            msocket::Error::PeerName(_) => MsocketError::InvalidArgument(text),
            msocket::Error::Pins(_) => MsocketError::PinStore(text),
            msocket::Error::Unreachable { .. } => MsocketError::Unreachable(text),
            msocket::Error::UnknownName { .. } => MsocketError::NameNotFound(text),
            msocket::Error::AlreadyListening(_) => MsocketError::AlreadyListening(text),
            msocket::Error::Io { .. } => MsocketError::Io(text),
            msocket::Error::Flow(e) => from_flow_error(&e, text),
            msocket::Error::Closed => MsocketError::Closed(text),
            _ => MsocketError::Internal(format!("unexpected error: {text}")),
        }
    }
}

impl From<msocket::IdentityError> for MsocketError {
    fn from(e: msocket::IdentityError) -> Self {
        match e {
            msocket::IdentityError::Malformed { .. } => MsocketError::InvalidArgument(e.to_string()),
            _ => MsocketError::Io(e.to_string()),
        }
    }
}

/// The kind of a flow's failure, with `text` as its message.
fn from_flow_error(e: &msocket::FlowError, text: String) -> MsocketError {
    match e {
        msocket::FlowError::PeerAborted { .. } => MsocketError::PeerAborted(text),
        msocket::FlowError::PeerForgotFlow => MsocketError::PeerForgotFlow(text),
        msocket::FlowError::DeadlineExceeded { .. } => MsocketError::NoPath(text),
        _ => MsocketError::FlowFailed(text),
    }
}

/// A flow's read, write or shutdown failed: the core wraps its flow errors in `io::Error`.
pub(crate) fn from_flow_io(e: io::Error) -> MsocketError {
    if let Some(inner) = e.get_ref().and_then(|r| r.downcast_ref::<msocket::Error>()) {
        return match inner {
            msocket::Error::Flow(flow) => from_flow_error(flow, inner.to_string()),
            other => MsocketError::FlowFailed(other.to_string()),
        };
    }
    match e.kind() {
        io::ErrorKind::TimedOut
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => MsocketError::FlowFailed(e.to_string()),
        _ => MsocketError::Io(e.to_string()),
    }
}

/// Runs `f`, turning a panic into [`MsocketError::Internal`]: nothing unwinds into the
/// host, which would abort it.
pub(crate) fn guard<T>(what: &str, f: impl FnOnce() -> Result<T, MsocketError>) -> Result<T, MsocketError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => Err(MsocketError::Internal(format!("{what}: {}", panic_message(&*payload)))),
    }
}

/// The text of a caught panic.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn name_errors_map_to_their_kinds() {
        assert!(matches!(MsocketError::from(NameError::NotFound("a".into())), MsocketError::NameNotFound(m) if m.contains("\"a\"")));
        assert!(matches!(
            MsocketError::from(NameError::BadUrl { url: "x".into(), reason: "r".into() }),
            MsocketError::BadUrl(_)
        ));
        assert!(matches!(
            MsocketError::from(NameError::InvalidName { name: "A".into(), reason: "r".into() }),
            MsocketError::InvalidArgument(_)
        ));
        assert!(matches!(
            MsocketError::from(NameError::Timeout { server: "s".into(), after: Duration::from_secs(1) }),
            MsocketError::NameService(m) if m.contains("did not answer")
        ));
        assert!(matches!(
            MsocketError::from(msocket::Error::Name(NameError::NotFound("b".into()))),
            MsocketError::NameNotFound(_)
        ));
    }

    #[test]
    fn trust_errors_map_to_their_kinds_with_the_core_message() {
        let e = MsocketError::from(msocket::Error::KeyChanged { name: "a.b".into(), pinned: "11".into(), offered: "22".into() });
        assert!(matches!(&e, MsocketError::KeyChanged(m) if m.contains("connect once to a.b#22")), "{e:?}");
        let e = MsocketError::from(msocket::Error::WrongKey { name: "a.b".into(), expected: "11".into(), offered: "22".into() });
        assert!(matches!(&e, MsocketError::WrongKey(m) if m.contains("22") && m.contains("11")), "{e:?}");
        let e = MsocketError::from(msocket::Error::StaleRecord { name: "a.b".into(), seen: 9, offered: 3 });
        assert!(matches!(&e, MsocketError::StaleRecord(m) if m.contains("older than 9")), "{e:?}");
        let addr = "192.0.2.1:7".parse().unwrap();
        let e = MsocketError::from(msocket::Error::NotAllowed { name: "a.b".into(), addr });
        assert!(matches!(&e, MsocketError::NotAllowed(m) if m.contains("allow-list")), "{e:?}");
        let bad = "a.b#abc".parse::<msocket::PeerName>().unwrap_err();
        let e = MsocketError::from(msocket::Error::PeerName(bad));
        assert!(matches!(&e, MsocketError::InvalidArgument(m) if m.contains("a.b#abc") && m.contains("hex digits")), "{e:?}");
        let bad = "A B".parse::<msocket::PeerName>().unwrap_err();
        assert!(matches!(MsocketError::from(msocket::Error::PeerName(bad)), MsocketError::InvalidArgument(_)));
        let e = MsocketError::from(msocket::Error::Pins(msocket::trust::PinError::Store("disk full".into())));
        assert!(matches!(&e, MsocketError::PinStore(m) if m.contains("disk full")), "{e:?}");
    }

    #[test]
    fn flow_io_errors_keep_their_kind_and_the_core_message() {
        let io_of = |e: msocket::FlowError| from_flow_io(io::Error::other(msocket::Error::Flow(e)));
        let e = io_of(msocket::FlowError::PeerAborted { code: 1, reason: "bye".into() });
        assert!(matches!(&e, MsocketError::PeerAborted(m) if m.contains("bye")), "{e:?}");
        assert!(matches!(io_of(msocket::FlowError::PeerForgotFlow), MsocketError::PeerForgotFlow(_)));
        let e = io_of(msocket::FlowError::DeadlineExceeded { after: Duration::from_secs(3) });
        assert!(matches!(&e, MsocketError::NoPath(m) if m.contains("3s")), "{e:?}");
        let e = io_of(msocket::FlowError::LocallyAborted { code: 1, reason: "mine".into() });
        assert!(matches!(&e, MsocketError::FlowFailed(m) if m.contains("mine")), "{e:?}");
        assert!(matches!(io_of(msocket::FlowError::EndpointDropped), MsocketError::FlowFailed(_)));
        assert!(matches!(from_flow_io(io::Error::other("disk")), MsocketError::Io(_)));
    }

    #[test]
    fn panics_become_internal_errors() {
        let r: Result<(), _> = guard("testing", || panic!("boom {}", 7));
        assert_eq!(r, Err(MsocketError::Internal("testing: boom 7".into())));
        let r: Result<(), _> = guard("testing", || std::panic::panic_any(5u8));
        assert!(matches!(r, Err(MsocketError::Internal(m)) if m.contains("non-text")));
    }

    #[test]
    fn unexpected_callback_errors_become_callback_errors() {
        let e: CallbackError = uniffi::UnexpectedUniFFICallbackError::new("java.lang.IllegalStateException: no").into();
        assert_eq!(e.to_string(), "java.lang.IllegalStateException: no");
    }
}
