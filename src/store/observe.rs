//! Mutation observers: how replication learns of every change without the store knowing it.
//!
//! A subscriber gets the resulting item state (not the command) after each change, through a
//! bounded channel. With nobody subscribed the cost is one relaxed atomic load per write. A
//! full channel drops the record and marks the subscription lagged, so a slow observer can
//! never block clients; it is expected to resynchronise from a snapshot scan.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use super::clock::Clock;
use super::item::{bits, Item};
use super::version::Version;

/// The state a key reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemState {
    Live {
        value: Box<[u8]>,
        flags: u32,
        /// Unix seconds; 0 never expires.
        exptime_unix: u64,
        version: Version,
    },
    Deleted {
        version: Version,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mutation {
    pub key: Box<[u8]>,
    pub state: ItemState,
}

impl Mutation {
    pub fn of_item(it: &Item, clock: &Clock) -> Mutation {
        let state = if it.has(bits::TOMBSTONE) {
            ItemState::Deleted {
                version: it.version(),
            }
        } else {
            ItemState::Live {
                value: it.value().into(),
                flags: it.flags,
                exptime_unix: clock.unix_of(it.exptime),
                version: it.version(),
            }
        };
        Mutation {
            key: it.key().into(),
            state,
        }
    }
}

/// The receiving end of a subscription.
pub struct Subscription {
    pub rx: Receiver<Mutation>,
    lagged: Arc<AtomicBool>,
}

impl Subscription {
    /// True once a record was dropped because the channel was full; clears the mark.
    pub fn take_lagged(&self) -> bool {
        self.lagged.swap(false, Ordering::Relaxed)
    }
}

struct Subscriber {
    tx: SyncSender<Mutation>,
    lagged: Arc<AtomicBool>,
}

#[derive(Default)]
pub struct Observers {
    any: AtomicBool,
    subs: Mutex<Vec<Subscriber>>,
}

impl Observers {
    pub fn subscribe(&self, capacity: usize) -> Subscription {
        let (tx, rx) = sync_channel(capacity);
        let lagged = Arc::new(AtomicBool::new(false));
        let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        subs.push(Subscriber {
            tx,
            lagged: lagged.clone(),
        });
        self.any.store(true, Ordering::Release);
        Subscription { rx, lagged }
    }

    /// Cheap check for the write path: build a record only if someone listens.
    #[inline]
    pub fn is_observed(&self) -> bool {
        self.any.load(Ordering::Relaxed)
    }

    pub fn publish(&self, m: Mutation) {
        let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        subs.retain(|s| match s.tx.try_send(m.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                s.lagged.store(true, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
        if subs.is_empty() {
            self.any.store(false, Ordering::Release);
        }
    }
}
