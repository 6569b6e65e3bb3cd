//! In-memory read model and notification log with the DynamoDB adapters' semantics (the version
//! rule of [`domain::decide`], applied atomically), plus a log of every call in order, for unit
//! tests of the consumers. Failures can be injected.

use domain::ports::{
    GuestReservationsReader, NotificationSender, Page, PageRequest, ReadModelStore, StoreError, StoreErrorKind,
};
use domain::{ApplyOutcome, GuestId, GuestReservation, Notification, ReservationId, Version, decide};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn injected(failures: &Mutex<VecDeque<StoreErrorKind>>, operation: &'static str) -> Result<(), StoreError> {
    match lock(failures).pop_front() {
        Some(kind) => Err(StoreError::new(kind, operation, "injected failure")),
        None => Ok(()),
    }
}

#[derive(Default)]
pub struct InMemoryReadModel {
    /// guest → reservation id → view; ids are ULIDs, so the map order is creation order.
    guests: Mutex<HashMap<GuestId, BTreeMap<ReservationId, GuestReservation>>>,
    /// (reservation, version) of every write that took effect, in order.
    applied: Mutex<Vec<(ReservationId, Version)>>,
    failures: Mutex<VecDeque<StoreErrorKind>>,
}

impl InMemoryReadModel {
    pub fn fail_next_call(&self, kind: StoreErrorKind) {
        lock(&self.failures).push_back(kind);
    }

    pub fn applied(&self) -> Vec<(ReservationId, Version)> {
        lock(&self.applied).clone()
    }

    /// Every view, by guest then reservation: for comparing two read models.
    pub fn snapshot(&self) -> BTreeMap<(GuestId, ReservationId), GuestReservation> {
        lock(&self.guests)
            .iter()
            .flat_map(|(g, rs)| rs.iter().map(|(r, v)| ((g.clone(), r.clone()), v.clone())))
            .collect()
    }
}

impl ReadModelStore for InMemoryReadModel {
    async fn apply(&self, view: &GuestReservation) -> Result<ApplyOutcome, StoreError> {
        injected(&self.failures, "apply(guest reservation)")?;
        let r = &view.reservation;
        let mut guests = lock(&self.guests);
        let slot = guests.entry(r.guest_id.clone()).or_default();
        let outcome = decide(slot.get(&r.reservation_id).map(|v| v.reservation.version), r.version);
        if outcome == ApplyOutcome::Applied {
            slot.insert(r.reservation_id.clone(), view.clone());
            lock(&self.applied).push((r.reservation_id.clone(), r.version));
        }
        Ok(outcome)
    }

    async fn applied_version(
        &self,
        guest_id: &GuestId,
        reservation_id: &ReservationId,
    ) -> Result<Option<Version>, StoreError> {
        injected(&self.failures, "applied version")?;
        Ok(lock(&self.guests)
            .get(guest_id)
            .and_then(|rs| rs.get(reservation_id))
            .map(|v| v.reservation.version))
    }
}

impl GuestReservationsReader for InMemoryReadModel {
    async fn guest_reservations(
        &self,
        guest_id: &GuestId,
        page: &PageRequest,
    ) -> Result<Page<GuestReservation>, StoreError> {
        injected(&self.failures, "guest reservations")?;
        let guests = lock(&self.guests);
        let newest_first = guests
            .get(guest_id)
            .into_iter()
            .flat_map(|rs| rs.iter().rev())
            .filter(|(id, _)| page.after.as_ref().is_none_or(|after| *id < after));
        let limit = page.limit.max(1) as usize;
        let mut items: Vec<GuestReservation> = newest_first.take(limit + 1).map(|(_, v)| v.clone()).collect();
        let next_after = (items.len() > limit).then(|| {
            items.truncate(limit);
            items[limit - 1].reservation.reservation_id.clone()
        });
        Ok(Page { items, next_after })
    }
}

#[derive(Default)]
pub struct InMemoryNotifications {
    progress: Mutex<HashMap<ReservationId, Version>>,
    /// Every notification sent, in order.
    sent: Mutex<Vec<Notification>>,
    failures: Mutex<VecDeque<StoreErrorKind>>,
}

impl InMemoryNotifications {
    pub fn fail_next_call(&self, kind: StoreErrorKind) {
        lock(&self.failures).push_back(kind);
    }

    pub fn sent(&self) -> Vec<Notification> {
        lock(&self.sent).clone()
    }
}

impl NotificationSender for InMemoryNotifications {
    async fn send_once(&self, notification: &Notification) -> Result<ApplyOutcome, StoreError> {
        injected(&self.failures, "send notification")?;
        let mut progress = lock(&self.progress);
        let outcome = decide(
            progress.get(&notification.reservation_id).copied(),
            notification.version,
        );
        if outcome == ApplyOutcome::Applied {
            progress.insert(notification.reservation_id.clone(), notification.version);
            lock(&self.sent).push(notification.clone());
        }
        Ok(outcome)
    }

    async fn notified_version(&self, reservation_id: &ReservationId) -> Result<Option<Version>, StoreError> {
        injected(&self.failures, "notified version")?;
        Ok(lock(&self.progress).get(reservation_id).copied())
    }
}
