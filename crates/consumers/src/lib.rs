//! The consumers of the event stream.
//!
//! A [`Consumer`] turns one [`domain::ReservationEvent`] into an effect through a port that
//! enforces [`domain::decide`]: the projector writes the guest read model, the notifier sends a
//! notification. [`handler::ConsumerHandler`] runs either over a Kinesis batch: in order, malformed
//! records dead-lettered, and the earliest record it could not apply reported back to Lambda.

pub mod config;
pub mod handler;

pub use config::{ConsumerConfig, ConsumerConfigError, NotifierConfig};
pub use handler::KafkaEventResponse;
pub use handler::{BatchStats, ConsumerHandler};

use domain::ports::{NotificationSender, ReadModelStore, StoreError};
use domain::{ApplyOutcome, GuestReservation, Notification, ReservationEvent, Version};
use std::future::Future;

pub trait Consumer: Send + Sync {
    /// The function's name in logs and dead letters.
    fn name(&self) -> &'static str;

    fn apply(&self, event: &ReservationEvent) -> impl Future<Output = Result<ApplyOutcome, StoreError>> + Send;

    /// The version of the event's reservation this consumer has applied so far, read only.
    fn applied_version(
        &self,
        event: &ReservationEvent,
    ) -> impl Future<Output = Result<Option<Version>, StoreError>> + Send;
}

/// Keeps the guest read model (`GET /guests/{guest_id}/reservations`) from events alone.
pub struct Projector<S> {
    store: S,
}

impl<S> Projector<S> {
    pub fn new(store: S) -> Self {
        Self { store }
    }

    pub fn store(&self) -> &S {
        &self.store
    }
}

impl<S: ReadModelStore> Consumer for Projector<S> {
    fn name(&self) -> &'static str {
        "projector"
    }

    async fn apply(&self, event: &ReservationEvent) -> Result<ApplyOutcome, StoreError> {
        self.store.apply(&GuestReservation::from_event(event)).await
    }

    async fn applied_version(&self, event: &ReservationEvent) -> Result<Option<Version>, StoreError> {
        let r = &event.reservation;
        self.store.applied_version(&r.guest_id, &r.reservation_id).await
    }
}

/// Tells the guest about each confirmation and cancellation, once.
pub struct Notifier<N> {
    sender: N,
}

impl<N> Notifier<N> {
    pub fn new(sender: N) -> Self {
        Self { sender }
    }
}

impl<N: NotificationSender> Consumer for Notifier<N> {
    fn name(&self) -> &'static str {
        "notifier"
    }

    async fn apply(&self, event: &ReservationEvent) -> Result<ApplyOutcome, StoreError> {
        self.sender.send_once(&Notification::for_event(event)).await
    }

    async fn applied_version(&self, event: &ReservationEvent) -> Result<Option<Version>, StoreError> {
        self.sender.notified_version(event.reservation_id()).await
    }
}

impl<C: Consumer> Consumer for std::sync::Arc<C> {
    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn apply(&self, event: &ReservationEvent) -> impl Future<Output = Result<ApplyOutcome, StoreError>> + Send {
        (**self).apply(event)
    }

    fn applied_version(
        &self,
        event: &ReservationEvent,
    ) -> impl Future<Output = Result<Option<Version>, StoreError>> + Send {
        (**self).applied_version(event)
    }
}
