//! The product's consumers of the event stream, written on the consumer kit
//! (`reservation-events-consumer`), as a team outside the product writes its own.
//!
//! Each is a [`Consumer`]: it turns one event into an effect through a port that enforces the
//! kit's ordering rule ([`domain::decide`]) in one conditional write: the projector writes the
//! guest read model, the notifier sends a notification. The kit's [`ConsumerHandler`] runs either
//! over Lambda's Kinesis or MSK batches: in order, malformed records dead-lettered, and the
//! earliest record it could not apply reported back to Lambda.

pub mod config;

pub use config::{ConsumerConfig, ConsumerConfigError, NotifierConfig};
pub use reservation_events_consumer::{BatchStats, Consumer, ConsumerError, ConsumerHandler, KafkaEventResponse};

use domain::ports::{NotificationSender, ReadModelStore};
use domain::{ApplyOutcome, GuestReservation, Notification, Version};
use reservation_events_consumer::ReservationEvent;

/// The domain's view of an event the kit decoded. One the product cannot act on (a type or
/// status added to the contract after this version) is refused for good: dead-lettered.
fn domain_event(event: &ReservationEvent) -> Result<domain::ReservationEvent, ConsumerError> {
    domain::ReservationEvent::try_from(event).map_err(ConsumerError::rejected)
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
    fn name(&self) -> &str {
        "projector"
    }

    async fn apply(&self, event: &ReservationEvent) -> Result<ApplyOutcome, ConsumerError> {
        let event = domain_event(event)?;
        Ok(self.store.apply(&GuestReservation::from_event(&event)).await?)
    }

    async fn applied_version(&self, event: &ReservationEvent) -> Result<Option<Version>, ConsumerError> {
        let r = domain_event(event)?.reservation;
        Ok(self.store.applied_version(&r.guest_id, &r.reservation_id).await?)
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
    fn name(&self) -> &str {
        "notifier"
    }

    async fn apply(&self, event: &ReservationEvent) -> Result<ApplyOutcome, ConsumerError> {
        let event = domain_event(event)?;
        Ok(self.sender.send_once(&Notification::for_event(&event)).await?)
    }

    async fn applied_version(&self, event: &ReservationEvent) -> Result<Option<Version>, ConsumerError> {
        let event = domain_event(event)?;
        Ok(self.sender.notified_version(event.reservation_id()).await?)
    }
}
