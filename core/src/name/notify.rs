//! Per-name change notifications, the push side of [`NameService::watch`].
//!
//! A watch must wake within moments of a registration, without polling the store, and a
//! name service may hold thousands of names of which only a few are watched. So a name
//! gets a channel only while someone watches it: [`ChangeNotifier::subscribe`] creates it,
//! and dropping the last [`Subscription`] of a name (the watch answered, timed out, or was
//! cancelled because its client went away) removes it. Memory is bounded by the number of
//! watches in progress, not by the number of names ever watched.
//!
//! A subscription is taken *before* the store is checked: a registration that lands
//! between the check and the wait still wakes the watcher, because a `tokio::sync::watch`
//! receiver remembers that a value was sent since it last looked.
//!
//! [`NameService::watch`]: super::NameService::watch

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::watch;

/// Wakes the watchers of a name when its record changes. Shared by every store (the
/// in-process [`super::MemoryNameService`] and the `msocketd name` server).
#[derive(Debug, Default)]
pub struct ChangeNotifier {
    names: Mutex<HashMap<String, watch::Sender<()>>>,
}

impl ChangeNotifier {
    /// A notifier with nobody watching.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts watching `name`: [`Subscription::changed`] completes at the next
    /// [`notify`](Self::notify) of the name after this call.
    pub fn subscribe(&self, name: &str) -> Subscription<'_> {
        let mut names = self.lock();
        let rx = match names.get(name) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = watch::channel(());
                names.insert(name.to_string(), tx);
                rx
            }
        };
        Subscription { notifier: self, name: name.to_string(), rx: Some(rx) }
    }

    /// Wakes every current subscriber of `name`. Call it after the new record is stored
    /// (durably, for a durable store), so a woken watcher finds it. Costs a map lookup
    /// when nobody watches the name.
    pub fn notify(&self, name: &str) {
        if let Some(tx) = self.lock().get(name) {
            tx.send_replace(());
        }
    }

    /// How many subscriptions are open, over all names.
    pub fn watchers(&self) -> usize {
        self.lock().values().map(watch::Sender::receiver_count).sum()
    }

    /// How many names have at least one subscription.
    pub fn watched_names(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, watch::Sender<()>>> {
        // Every operation leaves the map consistent, so a panic elsewhere while the lock
        // was held does not make its contents wrong.
        self.names.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One watcher's interest in one name; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription<'a> {
    notifier: &'a ChangeNotifier,
    name: String,
    /// Always `Some` until dropped.
    rx: Option<watch::Receiver<()>>,
}

impl Subscription<'_> {
    /// Completes when the name was notified since the subscription was taken or since
    /// this last completed. Cancel-safe; callers bound it with a timeout.
    pub async fn changed(&mut self) {
        let Some(rx) = self.rx.as_mut() else {
            return std::future::pending().await;
        };
        // The sender is only removed once no receiver is left, and this is one, so
        // `changed` cannot fail; if it ever did, waiting for the caller's timeout is the
        // safe answer (returning would make the caller spin).
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        let mut names = self.notifier.lock();
        // Drop the receiver under the lock, so no `subscribe` can see the count in between.
        drop(self.rx.take());
        if names.get(&self.name).is_some_and(|tx| tx.receiver_count() == 0) {
            names.remove(&self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SHORT: Duration = Duration::from_millis(50);

    #[tokio::test]
    async fn a_notification_wakes_only_that_names_subscribers() {
        let n = ChangeNotifier::new();
        let mut alice = n.subscribe("alice");
        let mut bob = n.subscribe("bob");
        // Sent before the wait began: still seen.
        n.notify("alice");
        tokio::time::timeout(SHORT, alice.changed()).await.expect("alice not woken");
        assert!(tokio::time::timeout(SHORT, bob.changed()).await.is_err(), "bob woken");
        // Seen once, not again.
        assert!(tokio::time::timeout(SHORT, alice.changed()).await.is_err());
        // Names nobody watches cost nothing and leave no entry.
        n.notify("carol");
        assert_eq!(n.watched_names(), 2);
    }

    #[test]
    fn dropping_the_last_subscription_forgets_the_name() {
        let n = ChangeNotifier::new();
        let a = n.subscribe("alice");
        let b = n.subscribe("alice");
        let c = n.subscribe("bob");
        assert_eq!((n.watchers(), n.watched_names()), (3, 2));
        drop(a);
        assert_eq!((n.watchers(), n.watched_names()), (2, 2));
        drop(b);
        drop(c);
        assert_eq!((n.watchers(), n.watched_names()), (0, 0));
    }

    #[tokio::test]
    async fn a_cancelled_wait_unsubscribes() {
        let n = ChangeNotifier::new();
        let waited = tokio::time::timeout(SHORT, async {
            let mut sub = n.subscribe("alice");
            sub.changed().await;
        })
        .await;
        assert!(waited.is_err());
        assert_eq!(n.watchers(), 0);
    }
}
