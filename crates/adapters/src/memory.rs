//! An in-memory store with the DynamoDB store's observable semantics (all-or-nothing commits,
//! conditions on inventory, version and idempotency key), for unit tests and the OpenAPI
//! contract test. Failures can be injected to exercise the retry and error paths.

use crate::dynamodb::items::NotHome;
use domain::ports::{
    Booking, Cancellation, CommitError, IdempotencyRecord, IdempotencyStore, NewReservation, ReservationStore,
    SlotStore, SlotWrite, SlotWriteError, StoreError, StoreErrorKind,
};
use domain::slot::{initial_shares, plan_take, resized_shares};
use domain::{Capacity, EventEnvelope, IdempotencyKey, Placement, ReservationId, ShardCount, Slot, SlotId};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

type CommitFailure = Box<dyn FnOnce() -> CommitError + Send>;

/// One shard's seats: (capacity, reserved). A slot of one shard has one.
type Shards = Vec<(u32, u32)>;

fn slot_of(slot_id: &SlotId, shards: &Shards) -> Slot {
    let capacity: u32 = shards.iter().map(|s| s.0).sum();
    Slot {
        slot_id: slot_id.clone(),
        capacity: Capacity::new(i64::from(capacity)).unwrap_or_else(|_| Capacity::new(0).expect("zero is a capacity")),
        reserved: shards.iter().map(|s| s.1).sum(),
        shards: ShardCount::new(shards.len() as i64).unwrap_or(ShardCount::ONE),
    }
}

#[derive(Default)]
struct State {
    slots: HashMap<SlotId, Shards>,
    reservations: HashMap<ReservationId, Booking>,
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
        Ok(state.slots.get(slot_id).map(|shards| slot_of(slot_id, shards)))
    }

    /// One Region that is its own primary: every slot is at home in it, so a named home is
    /// not recorded. Shards as the DynamoDB store splits them.
    async fn put_slot(
        &self,
        slot_id: &SlotId,
        capacity: Capacity,
        _home: Option<&domain::RegionName>,
        shards: Option<ShardCount>,
    ) -> Result<SlotWrite, SlotWriteError> {
        let mut state = self.lock();
        state.store_failure("put slot")?;
        if let Some(refusal) = state.homed_elsewhere.get(slot_id) {
            return Err(refusal.clone().into());
        }
        match state.slots.get_mut(slot_id) {
            None => {
                let count = shards.unwrap_or(ShardCount::ONE);
                let new: Shards = initial_shares(capacity.get(), count)
                    .into_iter()
                    .map(|c| (c, 0))
                    .collect();
                let slot = slot_of(slot_id, &new);
                state.slots.insert(slot_id.clone(), new);
                Ok(SlotWrite::Created(slot))
            }
            Some(existing) if shards.is_some_and(|k| usize::from(k.get()) != existing.len()) => {
                Err(SlotWriteError::ShardsDiffer {
                    shards: existing.len() as u16,
                })
            }
            Some(existing) => {
                let reserved: Vec<u32> = existing.iter().map(|s| s.1).collect();
                let Some(shares) = resized_shares(capacity.get(), &reserved) else {
                    return Err(SlotWriteError::CapacityBelowReserved {
                        requested: capacity.get(),
                        reserved: reserved.iter().sum(),
                    });
                };
                for (shard, share) in existing.iter_mut().zip(shares) {
                    shard.0 = share;
                }
                Ok(SlotWrite::Updated(slot_of(slot_id, existing)))
            }
        }
    }
}

impl ReservationStore for InMemoryStore {
    async fn get_booking(&self, reservation_id: &ReservationId) -> Result<Option<Booking>, StoreError> {
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
        let shards = state.slots.get(&reservation.slot_id).ok_or(CommitError::SlotNotFound)?;
        // A random first shard, then the others, as the DynamoDB store draws on them (here the
        // whole slot is seen at once, so sold out is exact).
        let available: Vec<u32> = shards.iter().map(|(c, r)| c - r).collect();
        let first = rand::random_range(0..available.len());
        let plan = plan_take(&available, reservation.seats.get(), first).ok_or(CommitError::SoldOut)?;
        if state.reservations.contains_key(&reservation.reservation_id) {
            return Err(CommitError::Contention);
        }
        // All checks passed: apply every write.
        let sharded = shards.len() > 1;
        if let Some(shards) = state.slots.get_mut(&reservation.slot_id) {
            for take in &plan.0 {
                shards[usize::from(take.shard)].1 += take.seats;
            }
        }
        let booking = Booking {
            reservation: reservation.clone(),
            placement: if sharded { plan } else { Placement::default() },
        };
        state.reservations.insert(reservation.reservation_id.clone(), booking);
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
            .map(|b| b.reservation.version);
        if stored_version != Some(change.current.version) {
            return Err(CommitError::ReservationChanged);
        }
        let one_item = [domain::ShardTake {
            shard: 0,
            seats: change.current.seats.get(),
        }];
        let takes = if change.placement.is_empty() {
            &one_item[..]
        } else {
            &change.placement.0[..]
        };
        let Some(shards) = state.slots.get_mut(&change.current.slot_id) else {
            return Err(CommitError::SlotNotFound);
        };
        let fits = takes
            .iter()
            .all(|t| shards.get(usize::from(t.shard)).is_some_and(|s| s.1 >= t.seats));
        if !fits {
            return Err(CommitError::SlotNotFound);
        }
        for take in takes {
            shards[usize::from(take.shard)].1 -= take.seats;
        }
        let booking = Booking {
            reservation: change.cancelled.clone(),
            placement: change.placement.clone(),
        };
        state
            .reservations
            .insert(change.cancelled.reservation_id.clone(), booking);
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
