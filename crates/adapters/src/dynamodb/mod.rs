//! The DynamoDB store. Holds a client and its table names; built once per process.

pub mod consumers;
mod errors;
pub mod homes;
pub mod items;
pub mod outbox;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use domain::ports::{
    Cancellation, CommitError, IdempotencyRecord, IdempotencyStore, NewReservation, ReservationStore, SlotStore,
    SlotWrite, SlotWriteError, StoreError, StoreErrorKind,
};
use domain::{Capacity, IdempotencyKey, RegionName, Reservation, ReservationId, Slot, SlotId};
use errors::{TransactionOutcome, classify_transaction_error, is_conditional_check_failure, store_error};
use items::{
    EXPIRES_AT, HOME_REGION, IdempotencyItem, OutboxItem, PK, RelayMode, ReservationItem, SlotHome, SlotItem,
    idempotency_pk, reservation_pk, slot_pk,
};
use serde_dynamo::aws_sdk_dynamodb_1::{from_item, to_item};
use std::collections::HashMap;
use time::{Duration, OffsetDateTime};

/// Table names and retention windows, from the function's typed config.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreTables {
    pub reservations_table: String,
    pub outbox_table: String,
    /// How long outbox items live before TTL removes them (the relay ignores those removals).
    pub outbox_retention: Duration,
    /// How long an Idempotency-Key is remembered.
    pub idempotency_retention: Duration,
    /// In polling mode new outbox items are marked unpublished for the poller's index.
    pub relay_mode: RelayMode,
    /// This Region and the primary one: where new items are born, which slots are at home here.
    pub regions: settings::Regions,
    /// The Regions a new slot may be at home in: the deployment's (`REGIONS`).
    pub slot_homes: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StoreConfigError {
    #[error(transparent)]
    Setting(#[from] settings::SettingError),
    #[error(transparent)]
    RelayMode(#[from] items::UnknownRelayMode),
}

impl StoreTables {
    /// Reads `RESERVATIONS_TABLE`, `OUTBOX_TABLE`, `OUTBOX_RETENTION_DAYS`,
    /// `IDEMPOTENCY_RETENTION_HOURS`, `RELAY_MODE` and the Regions ([`settings::Regions`]), each
    /// with its default.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, StoreConfigError> {
        use settings::{names, retention};
        let vars = settings::Vars(vars);
        // Capped at 100 years, longer than anyone means: `now + retention` then always stays in
        // range, where an absurd value would otherwise panic on the first write.
        let seconds = |n: u64, unit: u64| Duration::seconds(n.saturating_mul(unit).min(100 * 365 * 86_400) as i64);
        let regions = settings::Regions::from_vars(vars.0)?;
        Ok(Self {
            reservations_table: vars.name(names::RESERVATIONS_TABLE)?,
            outbox_table: vars.name(names::OUTBOX_TABLE)?,
            outbox_retention: seconds(vars.whole_number(&retention::OUTBOX_DAYS)?, 86_400),
            idempotency_retention: seconds(vars.whole_number(&retention::IDEMPOTENCY_HOURS)?, 3_600),
            relay_mode: match vars.get("RELAY_MODE") {
                None => RelayMode::default(),
                Some(v) => v.parse()?,
            },
            slot_homes: regions.deployment_from_vars(vars.0),
            regions,
        })
    }
}

#[derive(Debug, Clone)]
pub struct DynamoReservationStore {
    client: Client,
    tables: StoreTables,
}

type Item = HashMap<String, AttributeValue>;

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn serialize<T: serde::Serialize>(operation: &'static str, value: &T) -> Result<Item, StoreError> {
    to_item(value).map_err(|e| StoreError::new(StoreErrorKind::Other, operation, e))
}

fn deserialize<T: serde::de::DeserializeOwned>(operation: &'static str, item: Item) -> Result<T, StoreError> {
    from_item(item).map_err(|e| StoreError::new(StoreErrorKind::Other, operation, e))
}

/// Builders reject only missing required fields, which is a programming error here; still no panic.
fn built<T>(operation: &'static str, result: Result<T, aws_sdk_dynamodb::error::BuildError>) -> Result<T, StoreError> {
    result.map_err(|e| StoreError::new(StoreErrorKind::Other, operation, e))
}

impl DynamoReservationStore {
    pub fn new(client: Client, tables: StoreTables) -> Self {
        Self { client, tables }
    }

    pub fn tables(&self) -> &StoreTables {
        &self.tables
    }

    fn home(&self) -> SlotHome {
        SlotHome(self.tables.regions.clone())
    }

    fn outbox_put(
        &self,
        operation: &'static str,
        change_event: &domain::EventEnvelope,
        now: OffsetDateTime,
    ) -> Result<TransactWriteItem, StoreError> {
        let item = serialize(
            operation,
            &OutboxItem::new(
                change_event,
                now + self.tables.outbox_retention,
                self.tables.relay_mode,
                &self.tables.regions,
            ),
        )?;
        let put = built(
            operation,
            Put::builder()
                .table_name(&self.tables.outbox_table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(aggregate_id)")
                .build(),
        )?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    async fn transact(&self, operation: &'static str, items: Vec<TransactWriteItem>) -> Result<(), TransactionOutcome> {
        // A fresh token per logical attempt: if the SDK retries this very call after a lost
        // response, DynamoDB recognises the token and does not apply the transaction twice.
        let token = uuid::Uuid::new_v4().to_string();
        self.client
            .transact_write_items()
            .set_transact_items(Some(items))
            .client_request_token(token)
            .send()
            .await
            .map(|_| ())
            .map_err(|err| classify_transaction_error(operation, err))
    }
}

impl SlotStore for DynamoReservationStore {
    async fn get_slot(&self, slot_id: &SlotId) -> Result<Option<Slot>, StoreError> {
        Ok(self.get_slot_item(slot_id).await?.map(SlotItem::into_slot))
    }

    async fn put_slot(
        &self,
        slot_id: &SlotId,
        capacity: Capacity,
        home: Option<&RegionName>,
    ) -> Result<SlotWrite, SlotWriteError> {
        const CREATE: &str = "PutItem(slot)";
        const RESIZE: &str = "UpdateItem(slot)";
        let regions = &self.tables.regions;
        if let Some(home) = home
            && !self.tables.slot_homes.iter().any(|r| r == home.as_str())
        {
            return Err(SlotWriteError::UnknownRegion {
                region: home.to_string(),
                known: self.tables.slot_homes.clone(),
            });
        }
        // Only the primary creates slots: its conditional put is the one place a slot's home is
        // decided, so two Regions can never both create one (docs/multi-region.md). Elsewhere a
        // slot that is not here yet is either the primary's to create or still on its way.
        if regions.is_primary() {
            let slot = Slot::new(slot_id.clone(), capacity);
            let home_region = home.map_or(regions.here.as_str(), RegionName::as_str);
            let created = self
                .client
                .put_item()
                .table_name(&self.tables.reservations_table)
                .set_item(Some(serialize(CREATE, &SlotItem::new(&slot, home_region))?))
                .condition_expression("attribute_not_exists(pk)")
                .send()
                .await;
            match created {
                Ok(_) => return Ok(SlotWrite::Created(slot)),
                Err(err) if is_conditional_check_failure(&err) => {}
                Err(err) => return Err(store_error(CREATE, err).into()),
            }
        }

        // A request that names another home than this Region is never a resize here: the
        // slot is told apart from the item as it stands.
        if home.is_some_and(|home| home.as_str() != regions.here) {
            let old = self.get_slot_item(slot_id).await?;
            return Err(self.slot_refusal(old, home, capacity));
        }
        let updated = self
            .client
            .update_item()
            .table_name(&self.tables.reservations_table)
            .key(PK, s(slot_pk(slot_id)))
            // `capacity` is a DynamoDB reserved word; every attribute goes through a name placeholder.
            .update_expression("SET #capacity = :capacity, #available = :capacity - #reserved")
            .condition_expression(format!(
                "attribute_exists(pk) AND #reserved <= :capacity AND {}",
                self.home().condition()
            ))
            .expression_attribute_names("#capacity", "capacity")
            .expression_attribute_names("#available", "available")
            .expression_attribute_names("#reserved", "reserved")
            .expression_attribute_names("#home_region", HOME_REGION)
            .expression_attribute_values(":capacity", n(capacity.get()))
            .expression_attribute_values(":here", s(&regions.here))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match updated {
            Ok(out) => {
                let item = out.attributes.unwrap_or_default();
                Ok(SlotWrite::Updated(deserialize::<SlotItem>(RESIZE, item)?.into_slot()))
            }
            Err(err) if is_conditional_check_failure(&err) => {
                let old = match err.as_service_error() {
                    Some(UpdateItemError::ConditionalCheckFailedException(e)) => e.item.clone(),
                    _ => None,
                };
                let old = old.and_then(|item| deserialize::<SlotItem>(RESIZE, item).ok());
                Err(self.slot_refusal(old, home, capacity))
            }
            Err(err) => Err(store_error(RESIZE, err).into()),
        }
    }
}

impl DynamoReservationStore {
    async fn get_slot_item(&self, slot_id: &SlotId) -> Result<Option<SlotItem>, StoreError> {
        const OP: &str = "GetItem(slot)";
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.reservations_table)
            .key(PK, s(slot_pk(slot_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error(OP, e))?;
        out.item.map(|item| deserialize::<SlotItem>(OP, item)).transpose()
    }

    /// Why a slot write did not go in, from the slot item as it stood (`None`: not here).
    fn slot_refusal(&self, old: Option<SlotItem>, home: Option<&RegionName>, capacity: Capacity) -> SlotWriteError {
        let regions = &self.tables.regions;
        let Some(old) = old else {
            // Not here: only the primary creates it, and it is either still to be created there
            // or on its way here.
            return SlotWriteError::CreatedInPrimary {
                primary: regions.primary.clone(),
            };
        };
        let old_home = old.home_region.as_deref().unwrap_or(&regions.primary);
        if home.is_some_and(|home| home.as_str() != old_home) {
            return SlotWriteError::HomeDiffers {
                home: old_home.to_owned(),
            };
        }
        if let Some(not_home) = self
            .home()
            .refusal(old.home_region.as_deref(), old.moving_to.as_deref())
        {
            return not_home.into();
        }
        SlotWriteError::CapacityBelowReserved {
            requested: capacity.get(),
            reserved: old.reserved,
        }
    }
}

impl ReservationStore for DynamoReservationStore {
    async fn get_reservation(&self, reservation_id: &ReservationId) -> Result<Option<Reservation>, StoreError> {
        const OP: &str = "GetItem(reservation)";
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.reservations_table)
            .key(PK, s(reservation_pk(reservation_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error(OP, e))?;
        out.item
            .map(|item| deserialize::<ReservationItem>(OP, item).map(|i| i.reservation))
            .transpose()
    }

    async fn create_reservation(&self, change: &NewReservation) -> Result<(), CommitError> {
        const OP: &str = "TransactWriteItems(create reservation)";
        let now = OffsetDateTime::now_utc();
        let reservation = &change.reservation;
        let seats = n(reservation.seats.get());

        let take_seats = built(
            OP,
            Update::builder()
                .table_name(&self.tables.reservations_table)
                .key(PK, s(slot_pk(&reservation.slot_id)))
                .update_expression("SET #reserved = #reserved + :seats, #available = #available - :seats")
                // A missing slot has no `available`, so this also fails for unknown slots; the
                // returned old item (or its absence) tells the two apart, and a slot at home
                // in another Region from one sold out.
                .condition_expression(format!("#available >= :seats AND {}", self.home().condition()))
                .expression_attribute_names("#reserved", "reserved")
                .expression_attribute_names("#available", "available")
                .expression_attribute_names("#home_region", HOME_REGION)
                .expression_attribute_values(":seats", seats)
                .expression_attribute_values(":here", s(&self.tables.regions.here))
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .build(),
        )?;
        let put_reservation = built(
            OP,
            Put::builder()
                .table_name(&self.tables.reservations_table)
                .set_item(Some(serialize(OP, &ReservationItem::new(reservation))?))
                .condition_expression("attribute_not_exists(pk)")
                .build(),
        )?;
        let mut items = vec![
            TransactWriteItem::builder().update(take_seats).build(),
            TransactWriteItem::builder().put(put_reservation).build(),
            self.outbox_put(OP, &change.event, now)?,
        ];
        if let Some(record) = &change.idempotency {
            let item = IdempotencyItem::new(record, now + self.tables.idempotency_retention);
            let put_record = built(
                OP,
                Put::builder()
                    .table_name(&self.tables.reservations_table)
                    .set_item(Some(serialize(OP, &item)?))
                    // An expired record that TTL has not removed yet does not hold the key.
                    .condition_expression("attribute_not_exists(pk) OR #expires_at < :now")
                    .expression_attribute_names("#expires_at", EXPIRES_AT)
                    .expression_attribute_values(":now", n(now.unix_timestamp()))
                    .build(),
            )?;
            items.push(TransactWriteItem::builder().put(put_record).build());
        }

        match self.transact(OP, items).await {
            Ok(()) => Ok(()),
            Err(TransactionOutcome::Cancelled(reasons)) => Err(reasons.for_creation(&self.home())),
            Err(TransactionOutcome::Failed(err)) => Err(CommitError::Store(err)),
        }
    }

    async fn cancel_reservation(&self, change: &Cancellation) -> Result<(), CommitError> {
        const OP: &str = "TransactWriteItems(cancel reservation)";
        let now = OffsetDateTime::now_utc();
        let seats = n(change.current.seats.get());

        let put_cancelled = built(
            OP,
            Put::builder()
                .table_name(&self.tables.reservations_table)
                .set_item(Some(serialize(OP, &ReservationItem::new(&change.cancelled))?))
                .condition_expression("#version = :expected_version")
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":expected_version", n(change.current.version.get()))
                .build(),
        )?;
        let return_seats = built(
            OP,
            Update::builder()
                .table_name(&self.tables.reservations_table)
                .key(PK, s(slot_pk(&change.current.slot_id)))
                .update_expression("SET #reserved = #reserved - :seats, #available = #available + :seats")
                .condition_expression(format!(
                    "attribute_exists(pk) AND #reserved >= :seats AND {}",
                    self.home().condition()
                ))
                .expression_attribute_names("#reserved", "reserved")
                .expression_attribute_names("#available", "available")
                .expression_attribute_names("#home_region", HOME_REGION)
                .expression_attribute_values(":seats", seats)
                .expression_attribute_values(":here", s(&self.tables.regions.here))
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .build(),
        )?;
        let items = vec![
            TransactWriteItem::builder().put(put_cancelled).build(),
            TransactWriteItem::builder().update(return_seats).build(),
            self.outbox_put(OP, &change.event, now)?,
        ];
        match self.transact(OP, items).await {
            Ok(()) => Ok(()),
            Err(TransactionOutcome::Cancelled(reasons)) => Err(reasons.for_cancellation(&self.home())),
            Err(TransactionOutcome::Failed(err)) => Err(CommitError::Store(err)),
        }
    }
}

impl IdempotencyStore for DynamoReservationStore {
    async fn get_idempotency_record(&self, key: &IdempotencyKey) -> Result<Option<IdempotencyRecord>, StoreError> {
        const OP: &str = "GetItem(idempotency record)";
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.reservations_table)
            .key(PK, s(idempotency_pk(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error(OP, e))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let item: IdempotencyItem = deserialize(OP, item)?;
        if item.expires_at < OffsetDateTime::now_utc().unix_timestamp() {
            return Ok(None);
        }
        Ok(Some(item.into_record()))
    }
}
