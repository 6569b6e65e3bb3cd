//! The projector: keeps the guest read model (`GET /guests/{guest_id}/reservations`) from events
//! alone.

use crate::{Registration, domain_event};
use adapters::DynamoReadModel;
use domain::ports::ReadModelStore;
use domain::{ApplyOutcome, GuestReservation, Version};
use reservation_events_consumer::{BoxConsumer, Consumer, ConsumerError, ReservationEvent};
use settings::names;

pub const REGISTRATION: Registration = Registration {
    name: "projector",
    about: "Feed the guest read model (GET /guests/{guest_id}/reservations): catch up or rebuild.",
    table: names::READ_MODEL_TABLE,
    build: |wiring| {
        let table = settings::Vars(wiring.vars).name(names::READ_MODEL_TABLE)?;
        let store = DynamoReadModel::new(wiring.dynamodb.clone(), table);
        Ok(BoxConsumer::new(Projector::new(store)))
    },
    #[cfg(feature = "test-util")]
    in_memory: Some(|| BoxConsumer::new(Projector::new(adapters::InMemoryReadModel::default()))),
};

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
        REGISTRATION.name
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
