//! msocket's own logs, handed to the app's [`LogSink`] (logcat on Android, os_log on
//! Apple systems).
//!
//! The core logs through `tracing`; on a phone nothing prints it. [`set_log_sink`] installs
//! a subscriber that formats each record and queues it for one thread ("msocket-log"),
//! which calls the app. A queue and a thread of their own because records are made on the
//! runtime's workers, which must not wait on the app; the queue is bounded, and records
//! that do not fit are counted and reported in the next one delivered, never lost silently.
//! The level filter is one atomic, checked on every record, so changing it takes effect at
//! once without rebuilding tracing's per-call-site caches.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

use crate::error::MsocketError;
use crate::LogSink;

/// Records waiting for the app's sink at most.
pub const LOG_QUEUE: usize = 1024;

/// Longest message passed on, in bytes (longer ones are cut, saying so).
const MAX_MESSAGE: usize = 4096;

/// How severe a record is (the UDL's `LogLevel`), most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    fn from_tracing(level: tracing::Level) -> LogLevel {
        match level {
            tracing::Level::ERROR => LogLevel::Error,
            tracing::Level::WARN => LogLevel::Warn,
            tracing::Level::INFO => LogLevel::Info,
            tracing::Level::DEBUG => LogLevel::Debug,
            tracing::Level::TRACE => LogLevel::Trace,
        }
    }

    /// 1 (errors only) to 5 (everything); 0 means off.
    fn rank(self) -> u8 {
        self as u8 + 1
    }
}

struct Record {
    level: LogLevel,
    target: String,
    message: String,
}

/// The installed pipeline: where records go, and which are wanted.
struct Pipeline {
    sink: Arc<Mutex<Option<Arc<dyn LogSink>>>>,
}

static PIPELINE: OnceLock<Result<Pipeline, String>> = OnceLock::new();
/// The most verbose level passed on (see [`LogLevel::rank`]); 0 while no sink is set.
static MAX_RANK: AtomicU8 = AtomicU8::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Sends msocket's logs up to `max_level` to `sink` (None: stop logging).
pub fn set_log_sink(sink: Option<Box<dyn LogSink>>, max_level: LogLevel) -> Result<(), MsocketError> {
    let pipeline = PIPELINE.get_or_init(install).as_ref().map_err(|e| MsocketError::Io(e.clone()))?;
    let on = sink.is_some();
    *pipeline.sink.lock().unwrap_or_else(|p| p.into_inner()) = sink.map(Arc::from);
    MAX_RANK.store(if on { max_level.rank() } else { 0 }, Ordering::SeqCst);
    Ok(())
}

/// Changes the most verbose level passed to the sink.
pub fn set_log_level(max_level: LogLevel) {
    let has_sink = PIPELINE
        .get()
        .and_then(|p| p.as_ref().ok())
        .is_some_and(|p| p.sink.lock().unwrap_or_else(|p| p.into_inner()).is_some());
    if has_sink {
        MAX_RANK.store(max_level.rank(), Ordering::SeqCst);
    }
}

fn install() -> Result<Pipeline, String> {
    let (queue, records) = sync_channel(LOG_QUEUE);
    let sink: Arc<Mutex<Option<Arc<dyn LogSink>>>> = Arc::default();
    let delivering = sink.clone();
    std::thread::Builder::new()
        .name("msocket-log".into())
        .spawn(move || deliver(records, delivering))
        .map_err(|e| format!("cannot start the log thread: {e}"))?;
    let subscriber = tracing_subscriber::registry().with(ToSink { queue });
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|_| "another tracing subscriber is already installed in this process".to_string())?;
    Ok(Pipeline { sink })
}

fn deliver(records: Receiver<Record>, sink: Arc<Mutex<Option<Arc<dyn LogSink>>>>) {
    for mut record in records {
        let dropped = DROPPED.swap(0, Ordering::SeqCst);
        if dropped > 0 {
            let _ = write!(record.message, " ({dropped} earlier log records were dropped: the app's log sink was too slow)");
        }
        let Some(sink) = sink.lock().unwrap_or_else(|p| p.into_inner()).clone() else { continue };
        let Record { level, target, message } = record;
        // What the app's sink throws or panics with cannot be logged (that would loop).
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sink.log(level, target, message)));
    }
}

/// The `tracing` layer that formats records into the queue.
struct ToSink {
    queue: SyncSender<Record>,
}

fn wanted(meta: &Metadata<'_>) -> bool {
    LogLevel::from_tracing(*meta.level()).rank() <= MAX_RANK.load(Ordering::Relaxed)
}

impl<S: Subscriber> Layer<S> for ToSink {
    fn register_callsite(&self, _meta: &'static Metadata<'static>) -> Interest {
        // Asked every time: the level can change at any moment.
        Interest::sometimes()
    }

    fn enabled(&self, meta: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        wanted(meta)
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if !wanted(meta) {
            return;
        }
        let mut text = Text::default();
        event.record(&mut text);
        let record = Record { level: LogLevel::from_tracing(*meta.level()), target: meta.target().to_string(), message: text.finish() };
        if let Err(TrySendError::Full(_)) = self.queue.try_send(record) {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A record's message and fields as one line: `message key=value ...`.
#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Text {
    fn finish(self) -> String {
        let mut out = self.message;
        if !self.fields.is_empty() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&self.fields);
        }
        if out.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            out.push_str(" [cut]");
        }
        out
    }
}

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            if !self.fields.is_empty() {
                self.fields.push(' ');
            }
            let _ = write!(self.fields, "{}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CallbackError;
    use std::sync::mpsc;
    use std::time::Duration;

    struct Collect(Mutex<mpsc::Sender<(LogLevel, String, String)>>);
    impl LogSink for Collect {
        fn log(&self, level: LogLevel, target: String, message: String) -> Result<(), CallbackError> {
            let _ = self.0.lock().unwrap().send((level, target, message));
            Ok(())
        }
    }

    /// Waits for the record whose message contains `marker`.
    fn expect(rx: &mpsc::Receiver<(LogLevel, String, String)>, marker: &str) -> (LogLevel, String, String) {
        loop {
            let r = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| panic!("no record with {marker}"));
            if r.2.contains(marker) {
                return r;
            }
        }
    }

    // One test for the whole pipeline: the subscriber is process-wide.
    #[test]
    fn records_reach_the_sink_filtered_by_level_and_overflow_is_reported() {
        let (tx, rx) = mpsc::channel();
        set_log_sink(Some(Box::new(Collect(Mutex::new(tx)))), LogLevel::Info).unwrap();
        tracing::debug!("hidden-1");
        tracing::info!(peer = "alice", "shown-1");
        let (level, target, message) = expect(&rx, "shown-1");
        assert_eq!(level, LogLevel::Info);
        assert_eq!(target, module_path!());
        assert_eq!(message, "shown-1 peer=\"alice\"");

        set_log_level(LogLevel::Debug);
        tracing::debug!("shown-2");
        expect(&rx, "shown-2");
        set_log_level(LogLevel::Error);
        tracing::warn!("hidden-2");
        tracing::error!("shown-3");
        expect(&rx, "shown-3");

        // Flood past the queue while the sink is blocked: the excess is counted and said.
        let gate = Arc::new(Mutex::new(()));
        struct Blocked(Arc<Mutex<()>>, Mutex<mpsc::Sender<(LogLevel, String, String)>>);
        impl LogSink for Blocked {
            fn log(&self, level: LogLevel, target: String, message: String) -> Result<(), CallbackError> {
                drop(self.0.lock().unwrap());
                let _ = self.1.lock().unwrap().send((level, target, message));
                Ok(())
            }
        }
        let (tx, rx) = mpsc::channel();
        let held = gate.lock().unwrap();
        set_log_sink(Some(Box::new(Blocked(gate.clone(), Mutex::new(tx)))), LogLevel::Info).unwrap();
        for i in 0..LOG_QUEUE * 3 {
            tracing::info!("flood {i}");
        }
        drop(held);
        tracing::info!("after-flood");
        let (_, _, message) = expect(&rx, "earlier log records were dropped");
        // 3,072 sent while the sink was stuck on one: the queue held 1,024 of the rest.
        let dropped: usize = message.split(" (").nth(1).and_then(|n| n.split(' ').next()).unwrap().parse().unwrap();
        assert!(dropped >= 2 * LOG_QUEUE - 1, "{message}");

        set_log_sink(None, LogLevel::Trace).unwrap();
        assert_eq!(MAX_RANK.load(Ordering::SeqCst), 0);
    }
}
