//! An in-memory outbox with the DynamoDB adapter's semantics for the polling publisher: a sparse
//! "unpublished" index (oldest event first), conditional marks, and a lease with an expiry. The
//! index can be made to lag behind an item, as a global secondary index may; failures can be
//! injected.

use domain::EventEnvelope;
use domain::ports::{
    OutboxKey, PendingEvent, PublisherLease, StoreError, StoreErrorKind, UndecodableItem, UnpublishedEvents,
};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};
use time::OffsetDateTime;

#[derive(Debug, Clone)]
struct StoredItem {
    /// Commit order, standing in for the ULID event id the index sorts on.
    sequence: u64,
    committed_at: OffsetDateTime,
    event: Result<EventEnvelope, UndecodableItem>,
    unpublished: bool,
}

#[derive(Default)]
struct State {
    items: BTreeMap<OutboxKey, StoredItem>,
    next_sequence: u64,
    hidden_from_index: HashSet<OutboxKey>,
    lease: Option<(String, OffsetDateTime)>,
    failures: VecDeque<StoreErrorKind>,
    marks: Vec<OutboxKey>,
}

#[derive(Default)]
pub struct InMemoryOutbox {
    state: Mutex<State>,
}

impl InMemoryOutbox {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Commits an event, marked unpublished (the API in polling mode).
    pub fn commit(&self, envelope: EventEnvelope) {
        let key = OutboxKey {
            aggregate_id: envelope.aggregate_id.to_string(),
            version: envelope.version.get(),
        };
        self.insert(key, Ok(envelope));
    }

    /// Commits an item that does not decode.
    pub fn commit_undecodable(&self, key: OutboxKey, reason: &str) {
        let item = serde_json::json!({ "aggregate_id": key.aggregate_id, "version": key.version });
        self.insert(
            key,
            Err(UndecodableItem {
                reason: reason.to_owned(),
                item,
            }),
        );
    }

    fn insert(&self, key: OutboxKey, event: Result<EventEnvelope, UndecodableItem>) {
        let mut state = self.lock();
        let sequence = state.next_sequence;
        state.next_sequence += 1;
        state.items.insert(
            key,
            StoredItem {
                sequence,
                committed_at: OffsetDateTime::now_utc(),
                event,
                unpublished: true,
            },
        );
    }

    /// The index does not show `key` until [`Self::show_in_index`] (replication lag).
    pub fn hide_from_index(&self, key: &OutboxKey) {
        self.lock().hidden_from_index.insert(key.clone());
    }

    pub fn show_in_index(&self, key: &OutboxKey) {
        self.lock().hidden_from_index.remove(key);
    }

    pub fn fail_next_call(&self, kind: StoreErrorKind) {
        self.lock().failures.push_back(kind);
    }

    /// Keys still marked unpublished.
    pub fn unpublished(&self) -> Vec<OutboxKey> {
        let state = self.lock();
        state
            .items
            .iter()
            .filter(|(_, item)| item.unpublished)
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Every mark that took effect, in order.
    pub fn marks(&self) -> Vec<OutboxKey> {
        self.lock().marks.clone()
    }

    pub fn lease_holder(&self) -> Option<String> {
        self.lock().lease.as_ref().map(|(holder, _)| holder.clone())
    }
}

impl State {
    fn injected(&mut self, operation: &'static str) -> Result<(), StoreError> {
        match self.failures.pop_front() {
            Some(kind) => Err(StoreError::new(kind, operation, "injected failure")),
            None => Ok(()),
        }
    }
}

impl UnpublishedEvents for InMemoryOutbox {
    async fn pending(&self, limit: usize) -> Result<Vec<PendingEvent>, StoreError> {
        let mut state = self.lock();
        state.injected("pending")?;
        let mut visible: Vec<(&OutboxKey, &StoredItem)> = state
            .items
            .iter()
            .filter(|(key, item)| item.unpublished && !state.hidden_from_index.contains(*key))
            .collect();
        visible.sort_by_key(|(_, item)| item.sequence);
        Ok(visible
            .into_iter()
            .take(limit)
            .map(|(key, item)| PendingEvent {
                key: key.clone(),
                event: item.event.clone(),
            })
            .collect())
    }

    async fn earlier_unpublished(&self, key: &OutboxKey) -> Result<bool, StoreError> {
        let mut state = self.lock();
        state.injected("earlier unpublished")?;
        Ok(state
            .items
            .iter()
            .any(|(k, item)| k.aggregate_id == key.aggregate_id && k.version < key.version && item.unpublished))
    }

    async fn mark_published(&self, key: &OutboxKey) -> Result<bool, StoreError> {
        let mut state = self.lock();
        state.injected("mark published")?;
        let marked = match state.items.get_mut(key) {
            Some(item) if item.unpublished => {
                item.unpublished = false;
                true
            }
            _ => false,
        };
        if marked {
            state.marks.push(key.clone());
        }
        Ok(marked)
    }

    async fn mark_unpublished_since(&self, since: OffsetDateTime) -> Result<u64, StoreError> {
        let mut state = self.lock();
        state.injected("mark unpublished since")?;
        let mut marked = 0;
        for item in state.items.values_mut().filter(|item| item.committed_at >= since) {
            item.unpublished = true;
            marked += 1;
        }
        Ok(marked)
    }
}

impl PublisherLease for InMemoryOutbox {
    async fn acquire(&self, holder: &str, now: OffsetDateTime, until: OffsetDateTime) -> Result<bool, StoreError> {
        let mut state = self.lock();
        state.injected("acquire lease")?;
        let free = match &state.lease {
            None => true,
            Some((current, expires)) => current == holder || *expires < now,
        };
        if free {
            state.lease = Some((holder.to_owned(), until));
        }
        Ok(free)
    }

    async fn release(&self, holder: &str) -> Result<(), StoreError> {
        let mut state = self.lock();
        state.injected("release lease")?;
        if state.lease.as_ref().is_some_and(|(current, _)| current == holder) {
            state.lease = None;
        }
        Ok(())
    }
}
