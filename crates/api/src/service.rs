//! The use cases behind the routes, over the storage ports. Business outcomes are typed errors;
//! contention and throttling are retried here, with jittered backoff, a bounded number of times
//! per request and within a retry budget shared by the process's requests.

use crate::request::{CreateReservation, PutSlot};
use domain::ports::{
    Cancellation, CommitError, IdempotencyRecord, IdempotencyStore, NewReservation, ReservationStore, SlotStore,
    SlotWrite, SlotWriteError, StoreError, StoreErrorKind,
};
use domain::{Backoff, EventId, IdempotencyKey, NotCancellable, Reservation, ReservationId, Slot, SlotId, TraceId};
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("slot {0} does not exist")]
    SlotNotFound(SlotId),
    #[error("reservation {0} does not exist")]
    ReservationNotFound(ReservationId),
    #[error("slot {slot_id} has fewer than the requested seats left")]
    SoldOut { slot_id: SlotId },
    #[error(transparent)]
    NotCancellable(#[from] NotCancellable),
    #[error("capacity {requested} is below the {reserved} seats already reserved")]
    CapacityBelowReserved { requested: u32, reserved: u32 },
    #[error("the Idempotency-Key was already used with a different request")]
    IdempotencyKeyReused,
    /// Retrying could still succeed, but this request's retries (or the process's retry budget)
    /// ran out: the caller tries again later.
    #[error("gave up after {attempts} attempts because of concurrent changes to the same slot; retry shortly")]
    Contended { attempts: u32 },
    #[error("slot {slot_id} has {shards} shards, fixed when it was created")]
    ShardsDiffer { slot_id: SlotId, shards: u16 },
    /// Writes to the slot's inventory run only in its home Region (docs/multi-region.md).
    #[error("slot {slot_id} is at home in Region {region}: send writes for it to the API there")]
    HomedElsewhere { slot_id: SlotId, region: String },
    /// The slot's home is moving to another Region: no Region takes its writes for a moment.
    #[error("slot {slot_id} is moving its home to Region {to}: retry in a moment")]
    HomeMoving { slot_id: SlotId, to: String },
    /// With several Regions only the primary creates slots: one Region decides each home.
    #[error(
        "slot {slot_id} does not exist in this Region, and new slots are created in the primary Region {primary}: send the request there"
    )]
    CreatedInPrimary { slot_id: SlotId, primary: String },
    #[error(
        "slot {slot_id} is at home in Region {home}, not the one the request names; move its home with reservations-replay move-home"
    )]
    HomeDiffers { slot_id: SlotId, home: String },
    #[error("home_region {region} is not a Region of this deployment ({})", known.join(", "))]
    UnknownRegion { region: String, known: Vec<String> },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How often and how patiently to retry a commit that lost a race or was throttled.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// The wait between attempts: racing requests spread out.
    pub backoff: Backoff,
    /// Retries the process's requests share: a burst of conflicts is not multiplied by retries.
    pub budget: RetryBudget,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            backoff: Backoff::new(Duration::from_millis(5), Duration::from_millis(250)),
            budget: RetryBudget::new(1.0, 20.0),
        }
    }
}

/// A retry budget (a token bucket of retries, as in AWS SDKs' retry quota): every request puts
/// `per_request` retries in, up to `reserve`; every retry takes one out; when it is empty a
/// request that lost a race is answered at once (503, `Retry-After`) instead of trying again.
/// Retries so stay within about `per_request` times the requests, however many conflict.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    balance: Arc<Mutex<f64>>,
    per_request: f64,
    reserve: f64,
}

impl RetryBudget {
    /// Starts full (`reserve` retries).
    pub fn new(per_request: f64, reserve: f64) -> Self {
        Self {
            balance: Arc::new(Mutex::new(reserve)),
            per_request,
            reserve,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, f64> {
        self.balance.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A request arrives.
    pub fn deposit(&self) {
        let mut balance = self.lock();
        *balance = (*balance + self.per_request).min(self.reserve);
    }

    /// Takes one retry; false when none is left.
    pub fn withdraw(&self) -> bool {
        let mut balance = self.lock();
        if *balance >= 1.0 {
            *balance -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Whether a failed commit is worth trying again soon: it lost a race, or the store throttled.
fn retryable(err: &CommitError) -> bool {
    match err {
        CommitError::Contention | CommitError::ReservationChanged => true,
        CommitError::Store(e) => matches!(e.kind, StoreErrorKind::Throttled | StoreErrorKind::Contended),
        _ => false,
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum CreateOutcome {
    Created(Reservation),
    /// A repeat of an earlier request with the same Idempotency-Key and body: its stored answer.
    Replayed {
        status: u16,
        body: String,
    },
}

pub struct ReservationService<S> {
    store: S,
    retry: RetryPolicy,
}

/// Identifies a request for idempotency: a retry has the same fingerprint, a reused key does not.
pub fn fingerprint(route: &str, command: &impl serde::Serialize) -> String {
    let canonical = serde_json::to_vec(command).unwrap_or_default();
    let mut hasher = Sha256::new();
    hasher.update(route.as_bytes());
    hasher.update(b"\n");
    hasher.update(&canonical);
    hex::encode(hasher.finalize())
}

impl<S> ReservationService<S>
where
    S: SlotStore + ReservationStore + IdempotencyStore,
{
    pub fn new(store: S, retry: RetryPolicy) -> Self {
        Self { store, retry }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub async fn put_slot(&self, slot_id: &SlotId, command: PutSlot) -> Result<SlotWrite, ServiceError> {
        self.store
            .put_slot(slot_id, command.capacity, command.home_region.as_ref(), command.shards)
            .await
            .map_err(|e| match e {
                SlotWriteError::CapacityBelowReserved { requested, reserved } => {
                    ServiceError::CapacityBelowReserved { requested, reserved }
                }
                SlotWriteError::HomedElsewhere { region } => ServiceError::HomedElsewhere {
                    slot_id: slot_id.clone(),
                    region,
                },
                SlotWriteError::HomeMoving { to } => ServiceError::HomeMoving {
                    slot_id: slot_id.clone(),
                    to,
                },
                SlotWriteError::CreatedInPrimary { primary } => ServiceError::CreatedInPrimary {
                    slot_id: slot_id.clone(),
                    primary,
                },
                SlotWriteError::HomeDiffers { home } => ServiceError::HomeDiffers {
                    slot_id: slot_id.clone(),
                    home,
                },
                SlotWriteError::UnknownRegion { region, known } => ServiceError::UnknownRegion { region, known },
                SlotWriteError::ShardsDiffer { shards } => ServiceError::ShardsDiffer {
                    slot_id: slot_id.clone(),
                    shards,
                },
                SlotWriteError::Contention => ServiceError::Contended { attempts: 1 },
                SlotWriteError::Store(e) if e.kind == StoreErrorKind::Contended => {
                    ServiceError::Contended { attempts: 1 }
                }
                SlotWriteError::Store(e) => ServiceError::Store(e),
            })
    }

    pub async fn get_slot(&self, slot_id: &SlotId) -> Result<Slot, ServiceError> {
        self.store
            .get_slot(slot_id)
            .await?
            .ok_or_else(|| ServiceError::SlotNotFound(slot_id.clone()))
    }

    pub async fn get_reservation(&self, reservation_id: &ReservationId) -> Result<Reservation, ServiceError> {
        self.store
            .get_reservation(reservation_id)
            .await?
            .ok_or_else(|| ServiceError::ReservationNotFound(reservation_id.clone()))
    }

    fn replay(record: IdempotencyRecord, fingerprint: &str) -> Result<CreateOutcome, ServiceError> {
        if record.fingerprint != fingerprint {
            return Err(ServiceError::IdempotencyKeyReused);
        }
        Ok(CreateOutcome::Replayed {
            status: record.response_status,
            body: record.response_body,
        })
    }

    pub async fn create_reservation(
        &self,
        command: CreateReservation,
        idempotency_key: Option<IdempotencyKey>,
        trace_id: TraceId,
    ) -> Result<CreateOutcome, ServiceError> {
        let fingerprint = fingerprint("POST /reservations", &command);
        if let Some(key) = &idempotency_key
            && let Some(record) = self.store.get_idempotency_record(key).await?
        {
            return Self::replay(record, &fingerprint);
        }

        self.retry.budget.deposit();
        let mut attempt = 0;
        loop {
            let (reservation, event) = Reservation::confirm(
                ReservationId::generate(),
                command.slot_id.clone(),
                command.guest_id.clone(),
                command.seats,
                OffsetDateTime::now_utc(),
            );
            let idempotency = idempotency_key.as_ref().map(|key| IdempotencyRecord {
                key: key.clone(),
                fingerprint: fingerprint.clone(),
                response_status: 201,
                response_body: serde_json::to_string(&reservation).unwrap_or_default(),
                created_at: reservation.created_at,
            });
            let change = NewReservation {
                event: event.into_envelope(EventId::generate(), trace_id.clone()),
                reservation,
                idempotency,
            };
            match self.store.create_reservation(&change).await {
                Ok(()) => return Ok(CreateOutcome::Created(change.reservation)),
                Err(CommitError::SlotNotFound) => {
                    return Err(ServiceError::SlotNotFound(command.slot_id));
                }
                Err(CommitError::SoldOut) => {
                    return Err(ServiceError::SoldOut {
                        slot_id: command.slot_id,
                    });
                }
                Err(CommitError::HomedElsewhere { region }) => {
                    return Err(ServiceError::HomedElsewhere {
                        slot_id: command.slot_id,
                        region,
                    });
                }
                Err(CommitError::HomeMoving { to }) => {
                    return Err(ServiceError::HomeMoving {
                        slot_id: command.slot_id,
                        to,
                    });
                }
                Err(CommitError::IdempotencyKeyTaken) => {
                    // A concurrent request with the same key committed first: answer as it did.
                    let key = idempotency_key.as_ref().expect("only keyed requests write a record");
                    if let Some(record) = self.store.get_idempotency_record(key).await? {
                        return Self::replay(record, &fingerprint);
                    }
                }
                Err(e) if retryable(&e) => self.retry_or_give_up(&mut attempt, e).await?,
                Err(CommitError::Store(e)) => return Err(ServiceError::Store(e)),
                // Retryable, above.
                Err(CommitError::Contention | CommitError::ReservationChanged) => {}
            }
            tracing::debug!(attempt, slot_id = %command.slot_id, "reservation commit lost a race; retrying");
        }
    }

    /// After attempt `attempt` failed with `err`, which retrying may cure: waits its backoff and
    /// counts the attempt, or gives up when this request's attempts or the process's retry
    /// budget ran out (throttling as throttling, a lost race as contention).
    async fn retry_or_give_up(&self, attempt: &mut u32, err: CommitError) -> Result<(), ServiceError> {
        *attempt += 1;
        if *attempt >= self.retry.max_attempts || !self.retry.budget.withdraw() {
            return Err(match err {
                CommitError::Store(e) if e.kind == StoreErrorKind::Throttled => ServiceError::Store(e),
                _ => ServiceError::Contended { attempts: *attempt },
            });
        }
        tokio::time::sleep(self.retry.backoff.delay(*attempt - 1)).await;
        Ok(())
    }

    pub async fn cancel_reservation(
        &self,
        reservation_id: &ReservationId,
        trace_id: TraceId,
    ) -> Result<Reservation, ServiceError> {
        self.retry.budget.deposit();
        let mut attempt = 0;
        loop {
            let booking = self
                .store
                .get_booking(reservation_id)
                .await?
                .ok_or_else(|| ServiceError::ReservationNotFound(reservation_id.clone()))?;
            let current = booking.reservation;
            let (cancelled, event) = current.cancel(OffsetDateTime::now_utc())?;
            let change = Cancellation {
                event: event.into_envelope(EventId::generate(), trace_id.clone()),
                current,
                placement: booking.placement,
                cancelled,
            };
            match self.store.cancel_reservation(&change).await {
                Ok(()) => return Ok(change.cancelled),
                // Re-read: the reservation changed (perhaps cancelled by a racing request).
                Err(e) if retryable(&e) => self.retry_or_give_up(&mut attempt, e).await?,
                Err(CommitError::HomedElsewhere { region }) => {
                    return Err(ServiceError::HomedElsewhere {
                        slot_id: change.current.slot_id,
                        region,
                    });
                }
                Err(CommitError::HomeMoving { to }) => {
                    return Err(ServiceError::HomeMoving {
                        slot_id: change.current.slot_id,
                        to,
                    });
                }
                Err(CommitError::Store(e)) => return Err(ServiceError::Store(e)),
                Err(other) => {
                    return Err(ServiceError::Store(StoreError::new(
                        StoreErrorKind::Other,
                        "cancel reservation",
                        format!("inventory inconsistent with reservation {reservation_id}: {other}"),
                    )));
                }
            }
            tracing::debug!(attempt, %reservation_id, "cancellation commit lost a race; retrying");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_budget_lets_retries_be_at_most_a_share_of_the_requests() {
        let budget = RetryBudget::new(0.5, 2.0);
        // Full at the start: two retries, then none until requests put some back.
        assert!(budget.withdraw() && budget.withdraw());
        assert!(!budget.withdraw());
        budget.deposit();
        assert!(!budget.withdraw(), "half a retry is not a retry");
        budget.deposit();
        assert!(budget.withdraw());
        // Never more than the reserve, however long it was idle.
        (0..100).for_each(|_| budget.deposit());
        assert_eq!((0..10).filter(|_| budget.withdraw()).count(), 2);
    }
}
