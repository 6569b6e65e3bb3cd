//! An in-memory store with the DynamoDB store's observable semantics (all-or-nothing commits,
//! conditions on inventory, version and idempotency key), for unit tests and the OpenAPI
//! contract test. Failures can be injected to exercise the retry and error paths.

use crate::dynamodb::items::NotHome;
use domain::ports::{
    Cancellation, CommitError, IdempotencyRecord, IdempotencyStore, NewReservation, ReservationStore, SlotStore,
    SlotWrite, SlotWriteError, StoreError, StoreErrorKind,
};
use domain::{Capacity, EventEnvelope, IdempotencyKey, Reservation, ReservationId, Slot, SlotId};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

type CommitFailure = Box<dyn FnOnce() -> CommitError + Send>;

#[derive(Default)]
struct State {
    slots: HashMap<SlotId, Slot>,
    reservations: HashMap<ReservationId, Reservation>,
    idempotency: HashMap<IdempotencyKey, IdempotencyRecord>,
    outbox: Vec<EventEnvelope>,
    injected_commit_failures: VecDeque<CommitFailure>,
    injected_store_failures: VecDeque<StoreErrorKind>,
    commit_attempts: usize,
    /// Slots at home in another Region, or moving (docs/multi-region.md): this store does not
    /// write them.
    homed_elsewhere: HashMap<SlotId, NotHome>,
}

#[derive(Default)]
pub struct InMemoryStore {
    state: Mutex<State>,
}

impl InMemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next commit (create or cancel) fails with this error before touching anything.
    pub fn fail_next_commit(&self, failure: impl FnOnce() -> CommitError + Send + 'static) {
        self.lock().injected_commit_failures.push_back(Box::new(failure));
    }

    /// From now on `slot_id` is at home in Region `region`, not this store's: writes that touch
    /// its inventory are refused, as the DynamoDB store refuses them.
    pub fn home_slot_elsewhere(&self, slot_id: &SlotId, region: &str) {
        let refusal = NotHome::Elsewhere {
            region: region.to_owned(),
        };
        self.lock().homed_elsewhere.insert(slot_id.clone(), refusal);
    }

    /// From now on `slot_id`'s home is moving to Region `to`: writes that touch its inventory
    /// are refused until the move ends, as the DynamoDB store refuses them.
    pub fn move_slot_home(&self, slot_id: &SlotId, to: &str) {
        let refusal = NotHome::Moving { to: to.to_owned() };
        self.lock().homed_elsewhere.insert(slot_id.clone(), refusal);
    }

    /// The next store call of any kind fails with a [`StoreError`] of this kind.
    pub fn fail_next_call(&self, kind: StoreErrorKind) {
        self.lock().injected_store_failures.push_back(kind);
    }

    /// Every committed outbox event, in commit order.
    pub fn outbox(&self) -> Vec<EventEnvelope> {
        self.lock().outbox.clone()
    }

    pub fn commit_attempts(&self) -> usize {
        self.lock().commit_attempts
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic in another test thread must not hide this test's result.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    fn store_failure(&mut self, operation: &'static str) -> Result<(), StoreError> {
        match self.injected_store_failures.pop_front() {
            Some(kind) => Err(StoreError::new(kind, operation, "injected failure")),
            None => Ok(()),
        }
    }

    fn take_injected_failure(&mut self) -> Option<CommitError> {
        self.commit_attempts += 1;
        if let Err(e) = self.store_failure("commit") {
            return Some(CommitError::Store(e));
        }
        self.injected_commit_failures.pop_front().map(|f| f())
    }
}

impl SlotStore for InMemoryStore {
    async fn get_slot(&self, slot_id: &SlotId) -> Result<Option<Slot>, StoreError> {
        let mut state = self.lock();
        state.store_failure("get slot")?;
        Ok(state.slots.get(slot_id).cloned())
    }

    /// One Region that is its own primary: every slot is at home in it, so a named home is
    /// not recorded.
    async fn put_slot(
        &self,
        slot_id: &SlotId,
        capacity: Capacity,
        _home: Option<&domain::RegionName>,
    ) -> Result<SlotWrite, SlotWriteError> {
        let mut state = self.lock();
        state.store_failure("put slot")?;
        if let Some(refusal) = state.homed_elsewhere.get(slot_id) {
            return Err(refusal.clone().into());
        }
        match state.slots.get_mut(slot_id) {
            None => {
                let slot = Slot::new(slot_id.clone(), capacity);
                state.slots.insert(slot_id.clone(), slot.clone());
                Ok(SlotWrite::Created(slot))
            }
            Some(slot) if !slot.can_resize_to(capacity) => Err(SlotWriteError::CapacityBelowReserved {
                requested: capacity.get(),
                reserved: slot.reserved,
            }),
            Some(slot) => {
                slot.capacity = capacity;
                Ok(SlotWrite::Updated(slot.clone()))
            }
        }
    }
}

impl ReservationStore for InMemoryStore {
    async fn get_reservation(&self, reservation_id: &ReservationId) -> Result<Option<Reservation>, StoreError> {
        let mut state = self.lock();
        state.store_failure("get reservation")?;
        Ok(state.reservations.get(reservation_id).cloned())
    }

    async fn create_reservation(&self, change: &NewReservation) -> Result<(), CommitError> {
        let mut state = self.lock();
        if let Some(failure) = state.take_injected_failure() {
            return Err(failure);
        }
        let reservation = &change.reservation;
        if let Some(refusal) = state.homed_elsewhere.get(&reservation.slot_id) {
            return Err(refusal.clone().into());
        }
        if let Some(record) = &change.idempotency
            && state.idempotency.contains_key(&record.key)
        {
            return Err(CommitError::IdempotencyKeyTaken);
        }
        let slot = state.slots.get(&reservation.slot_id).ok_or(CommitError::SlotNotFound)?;
        if !slot.can_hold(reservation.seats) {
            return Err(CommitError::SoldOut);
        }
        if state.reservations.contains_key(&reservation.reservation_id) {
            return Err(CommitError::Contention);
        }
        // All checks passed: apply every write.
        if let Some(slot) = state.slots.get_mut(&reservation.slot_id) {
            slot.reserved += reservation.seats.get();
        }
        state
            .reservations
            .insert(reservation.reservation_id.clone(), reservation.clone());
        state.outbox.push(change.event.clone());
        if let Some(record) = &change.idempotency {
            state.idempotency.insert(record.key.clone(), record.clone());
        }
        Ok(())
    }

    async fn cancel_reservation(&self, change: &Cancellation) -> Result<(), CommitError> {
        let mut state = self.lock();
        if let Some(failure) = state.take_injected_failure() {
            return Err(failure);
        }
        if let Some(refusal) = state.homed_elsewhere.get(&change.current.slot_id) {
            return Err(refusal.clone().into());
        }
        let stored_version = state
            .reservations
            .get(&change.current.reservation_id)
            .map(|r| r.version);
        if stored_version != Some(change.current.version) {
            return Err(CommitError::ReservationChanged);
        }
        let seats = change.current.seats.get();
        match state.slots.get_mut(&change.current.slot_id) {
            Some(slot) if slot.reserved >= seats => slot.reserved -= seats,
            _ => return Err(CommitError::SlotNotFound),
        }
        state
            .reservations
            .insert(change.cancelled.reservation_id.clone(), change.cancelled.clone());
        state.outbox.push(change.event.clone());
        Ok(())
    }
}

impl IdempotencyStore for InMemoryStore {
    async fn get_idempotency_record(&self, key: &IdempotencyKey) -> Result<Option<IdempotencyRecord>, StoreError> {
        let mut state = self.lock();
        state.store_failure("get idempotency record")?;
        Ok(state.idempotency.get(key).cloned())
    }
}
