//! The DynamoDB store. Holds a client and its table names; built once per process.

pub mod consumers;
mod errors;
pub mod homes;
pub mod items;
pub mod outbox;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use domain::ports::{
    Booking, Cancellation, CommitError, IdempotencyRecord, IdempotencyStore, NewReservation, ReservationStore,
    SlotStore, SlotWrite, SlotWriteError, StoreError, StoreErrorKind,
};
use domain::slot::{plan_take, resized_shares};
use domain::{Capacity, IdempotencyKey, Placement, RegionName, ReservationId, ShardCount, ShardTake, Slot, SlotId};
use errors::{Refusal, TransactionOutcome, classify_transaction_error, is_conditional_check_failure, store_error};
use items::{
    EXPIRES_AT, HOME_REGION, IdempotencyItem, OutboxItem, PK, REFILLS, RelayMode, ReservationItem, SHARDS, SlotHome,
    SlotItem, idempotency_pk, reservation_pk, shard_pk, shard_pks, slot_pk,
};
use serde_dynamo::aws_sdk_dynamodb_1::{from_item, to_item};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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
    /// The shard counts of the slots this process has booked (fixed at creation, so never
    /// stale): a sharded slot's bookings go straight to a shard.
    sharded: Arc<Mutex<HashMap<SlotId, ShardCount>>>,
}

/// How many times a sharded booking or resize reads the shards and tries again when the shards
/// changed under it, before it reports contention (the caller backs off and retries).
const SHARD_ROUNDS: usize = 4;
/// How many slots a process remembers the shard count of.
const REMEMBERED_SLOTS: usize = 100_000;

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
        Self {
            client,
            tables,
            sharded: Arc::default(),
        }
    }

    fn known_shards(&self, slot_id: &SlotId) -> Option<ShardCount> {
        self.sharded.lock().ok()?.get(slot_id).copied()
    }

    fn remember_shards(&self, slot_id: &SlotId, shards: ShardCount) {
        if let Ok(mut known) = self.sharded.lock() {
            if known.len() >= REMEMBERED_SLOTS {
                known.clear();
            }
            known.insert(slot_id.clone(), shards);
        }
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
        let Some(item) = self.get_slot_item(slot_id).await? else {
            return Ok(None);
        };
        let shards = item.shard_count();
        if !shards.is_sharded() {
            return Ok(Some(item.into_slot()));
        }
        // The sum of each shard as read in one call: not a snapshot (a booking may commit on one
        // shard between the reads of two others), each shard's figures are committed ones.
        Ok(self
            .read_shards(slot_id, shards)
            .await?
            .map(|items| SlotItem::slot_of(&items)))
    }

    async fn put_slot(
        &self,
        slot_id: &SlotId,
        capacity: Capacity,
        home: Option<&RegionName>,
        shards: Option<ShardCount>,
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
            let slot = Slot::sharded(slot_id.clone(), capacity, shards.unwrap_or(ShardCount::ONE));
            let home_region = home.map_or(regions.here.as_str(), RegionName::as_str);
            if slot.shards.is_sharded() {
                if self.create_shards(&slot, home_region).await? {
                    return Ok(SlotWrite::Created(slot));
                }
            } else {
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
        }

        // A request that names another home than this Region is never a resize here: the
        // slot is told apart from the item as it stands.
        if home.is_some_and(|home| home.as_str() != regions.here) {
            let old = self.get_slot_item(slot_id).await?;
            return Err(self.slot_refusal(old, home, capacity));
        }
        if shards.is_some_and(ShardCount::is_sharded) {
            let Some(old) = self.get_slot_item(slot_id).await? else {
                return Err(self.slot_refusal(None, home, capacity));
            };
            if Some(old.shard_count()) != shards {
                return Err(SlotWriteError::ShardsDiffer {
                    shards: old.shard_count().get(),
                });
            }
            return self.resize_shards(slot_id, capacity, old.shard_count()).await;
        }
        // A slot of one shard: one conditional update, as slots always had.
        let updated = self
            .client
            .update_item()
            .table_name(&self.tables.reservations_table)
            .key(PK, s(slot_pk(slot_id)))
            // `capacity` is a DynamoDB reserved word; every attribute goes through a name placeholder.
            .update_expression("SET #capacity = :capacity, #available = :capacity - #reserved")
            .condition_expression(format!(
                "attribute_exists(pk) AND attribute_not_exists(#shards) AND #reserved <= :capacity AND {}",
                self.home().condition()
            ))
            .expression_attribute_names("#capacity", "capacity")
            .expression_attribute_names("#available", "available")
            .expression_attribute_names("#reserved", "reserved")
            .expression_attribute_names("#shards", SHARDS)
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
                match old {
                    Some(old) if old.shard_count().is_sharded() => {
                        if shards.is_some() {
                            return Err(SlotWriteError::ShardsDiffer {
                                shards: old.shard_count().get(),
                            });
                        }
                        self.resize_shards(slot_id, capacity, old.shard_count()).await
                    }
                    old => Err(self.slot_refusal(old, home, capacity)),
                }
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

    /// Every shard of a sharded slot, shard 0 first, each read consistently (one BatchGetItem:
    /// `shards` read units for items under 4 KB). `None` when one is missing.
    pub(crate) async fn read_shards(
        &self,
        slot_id: &SlotId,
        shards: ShardCount,
    ) -> Result<Option<Vec<SlotItem>>, StoreError> {
        read_shards(&self.client, &self.tables.reservations_table, slot_id, shards).await
    }

    /// Creates every shard of a new sharded slot in one transaction. False when the slot exists.
    async fn create_shards(&self, slot: &Slot, home_region: &str) -> Result<bool, StoreError> {
        const OP: &str = "TransactWriteItems(create sharded slot)";
        let mut items = Vec::new();
        for shard in SlotItem::new_shards(slot, home_region) {
            let put = built(
                OP,
                Put::builder()
                    .table_name(&self.tables.reservations_table)
                    .set_item(Some(serialize(OP, &shard)?))
                    .condition_expression("attribute_not_exists(pk)")
                    .build(),
            )?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        let count = items.len();
        match self.transact(OP, items).await {
            Ok(()) => Ok(true),
            Err(TransactionOutcome::Cancelled(reasons)) if reasons.condition_failed_in(count) => Ok(false),
            // Two creations racing: the one that lost finds the slot and resizes it.
            Err(TransactionOutcome::Cancelled(reasons))
                if matches!(reasons.commit_error(), CommitError::Contention) =>
            {
                Ok(false)
            }
            Err(TransactionOutcome::Cancelled(_)) => Err(StoreError::new(
                StoreErrorKind::Other,
                OP,
                "creating the shards was cancelled",
            )),
            Err(TransactionOutcome::Failed(err)) => Err(err),
        }
    }

    /// Resizes a sharded slot: reads its shards, gives each its reservations and an even part
    /// of the free seats, and writes every shard in one transaction, each on the condition that
    /// its reservations still fit. Bookings that raced are read again, a few rounds at most.
    async fn resize_shards(
        &self,
        slot_id: &SlotId,
        capacity: Capacity,
        shards: ShardCount,
    ) -> Result<SlotWrite, SlotWriteError> {
        const OP: &str = "TransactWriteItems(resize sharded slot)";
        for _ in 0..SHARD_ROUNDS {
            let Some(items) = self.read_shards(slot_id, shards).await? else {
                return Err(self.slot_refusal(None, None, capacity));
            };
            if let Some(refusal) = self.not_home(&items) {
                return Err(refusal.into());
            }
            let reserved: Vec<u32> = items.iter().map(|i| i.reserved).collect();
            let Some(shares) = resized_shares(capacity.get(), &reserved) else {
                return Err(SlotWriteError::CapacityBelowReserved {
                    requested: capacity.get(),
                    reserved: reserved.iter().sum(),
                });
            };
            let mut writes = Vec::new();
            for (item, share) in items.iter().zip(&shares) {
                let update = built(
                    OP,
                    Update::builder()
                        .table_name(&self.tables.reservations_table)
                        .key(PK, s(&item.pk))
                        .update_expression(
                            "SET #capacity = :capacity, #available = :capacity - #reserved ADD #refills :one",
                        )
                        .condition_expression(format!(
                            "attribute_exists(pk) AND #reserved <= :capacity AND {}",
                            self.home().condition()
                        ))
                        .expression_attribute_names("#capacity", "capacity")
                        .expression_attribute_names("#available", "available")
                        .expression_attribute_names("#reserved", "reserved")
                        .expression_attribute_names("#refills", REFILLS)
                        .expression_attribute_names("#home_region", HOME_REGION)
                        .expression_attribute_values(":capacity", n(share))
                        .expression_attribute_values(":one", n(1))
                        .expression_attribute_values(":here", s(&self.tables.regions.here))
                        .build(),
                )?;
                writes.push(TransactWriteItem::builder().update(update).build());
            }
            match self.transact(OP, writes).await {
                Ok(()) => {
                    let mut slot = SlotItem::slot_of(&items);
                    slot.capacity = capacity;
                    return Ok(SlotWrite::Updated(slot));
                }
                // A booking took seats from a shard, or the home changed, since the read.
                Err(TransactionOutcome::Cancelled(reasons)) if reasons.condition_failed_in(items.len()) => {}
                Err(TransactionOutcome::Cancelled(reasons)) => match reasons.commit_error() {
                    CommitError::Contention => {}
                    CommitError::Store(e) => return Err(e.into()),
                    other => return Err(StoreError::new(StoreErrorKind::Other, OP, other.to_string()).into()),
                },
                Err(TransactionOutcome::Failed(err)) => return Err(err.into()),
            }
        }
        Err(SlotWriteError::Contention)
    }

    /// Why this Region may not write a slot whose shards are `items`, if it may not.
    fn not_home(&self, items: &[SlotItem]) -> Option<items::NotHome> {
        items.iter().find_map(|item| {
            self.home()
                .refusal(item.home_region.as_deref(), item.moving_to.as_deref())
        })
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

    /// The transaction of one booking attempt: seats from each shard of `placement` (the one
    /// slot item when it is empty), the reservation, its event, its idempotency record.
    async fn commit_booking(&self, change: &NewReservation, placement: &Placement) -> Result<(), Refusal> {
        const OP: &str = "TransactWriteItems(create reservation)";
        let now = OffsetDateTime::now_utc();
        let reservation = &change.reservation;
        let one_item = [ShardTake {
            shard: 0,
            seats: reservation.seats.get(),
        }];
        let takes = if placement.is_empty() {
            &one_item[..]
        } else {
            &placement.0[..]
        };
        let fail = |e: StoreError| Refusal::Commit(CommitError::Store(e));
        let mut items = Vec::new();
        for take in takes {
            // A slot of one shard is booked with no read: its condition says whether it is one
            // (`shards` absent), and the returned old item how many it has when it is not.
            let condition = if placement.is_empty() {
                format!(
                    "#available >= :seats AND attribute_not_exists(#shards) AND {}",
                    self.home().condition()
                )
            } else {
                format!("#available >= :seats AND {}", self.home().condition())
            };
            let mut update = Update::builder()
                .table_name(&self.tables.reservations_table)
                .key(PK, s(shard_pk(&reservation.slot_id, take.shard)))
                .update_expression("SET #reserved = #reserved + :seats, #available = #available - :seats")
                // A missing slot has no `available`, so this also fails for unknown slots; the
                // returned old item (or its absence) tells the two apart, and a slot at home
                // in another Region from one sold out.
                .condition_expression(condition)
                .expression_attribute_names("#reserved", "reserved")
                .expression_attribute_names("#available", "available")
                .expression_attribute_names("#home_region", HOME_REGION)
                .expression_attribute_values(":seats", n(take.seats))
                .expression_attribute_values(":here", s(&self.tables.regions.here))
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
            if placement.is_empty() {
                update = update.expression_attribute_names("#shards", SHARDS);
            }
            items.push(
                TransactWriteItem::builder()
                    .update(built(OP, update.build()).map_err(fail)?)
                    .build(),
            );
        }
        let shard_items = items.len();
        let put_reservation = built(
            OP,
            Put::builder()
                .table_name(&self.tables.reservations_table)
                .set_item(Some(
                    serialize(OP, &ReservationItem::placed(reservation, placement)).map_err(fail)?,
                ))
                .condition_expression("attribute_not_exists(pk)")
                .build(),
        )
        .map_err(fail)?;
        items.push(TransactWriteItem::builder().put(put_reservation).build());
        items.push(self.outbox_put(OP, &change.event, now).map_err(fail)?);
        if let Some(record) = &change.idempotency {
            let item = IdempotencyItem::new(record, now + self.tables.idempotency_retention);
            let put_record = built(
                OP,
                Put::builder()
                    .table_name(&self.tables.reservations_table)
                    .set_item(Some(serialize(OP, &item).map_err(fail)?))
                    // An expired record that TTL has not removed yet does not hold the key.
                    .condition_expression("attribute_not_exists(pk) OR #expires_at < :now")
                    .expression_attribute_names("#expires_at", EXPIRES_AT)
                    .expression_attribute_values(":now", n(now.unix_timestamp()))
                    .build(),
            )
            .map_err(fail)?;
            items.push(TransactWriteItem::builder().put(put_record).build());
        }
        match self.transact(OP, items).await {
            Ok(()) => Ok(()),
            Err(TransactionOutcome::Cancelled(reasons)) => Err(reasons.for_creation(&self.home(), shard_items)),
            Err(TransactionOutcome::Failed(err)) => Err(fail(err)),
        }
    }

    /// Books a sharded slot: first one random shard (racing bookings rarely meet there); when it
    /// has too few seats, reads every shard and draws on those that have them, one or several in
    /// one transaction. Sold out only when the shards together lack the seats in two reads
    /// between which no seats came back to any shard (their `refills` unchanged): the slot then
    /// lacked them at the moment the first read ended.
    async fn book_sharded(&self, change: &NewReservation, shards: ShardCount) -> Result<(), CommitError> {
        let slot_id = &change.reservation.slot_id;
        let seats = change.reservation.seats.get();
        let k = usize::from(shards.get());
        let mut placement = Placement(vec![ShardTake {
            shard: rand::random_range(0..k) as u16,
            seats,
        }]);
        for _ in 0..SHARD_ROUNDS {
            match self.commit_booking(change, &placement).await {
                Ok(()) => return Ok(()),
                Err(Refusal::Commit(err)) => return Err(err),
                Err(Refusal::Short | Refusal::Sharded(_)) => {}
            }
            let first = self.shards_or_not_found(slot_id, shards).await?;
            let available: Vec<u32> = first.iter().map(|i| i.available).collect();
            if let Some(plan) = plan_take(&available, seats, rand::random_range(0..k)) {
                placement = plan;
                continue;
            }
            let second = self.shards_or_not_found(slot_id, shards).await?;
            let refilled = first.iter().zip(&second).any(|(a, b)| a.refills != b.refills);
            if !refilled {
                return Err(CommitError::SoldOut);
            }
            // Seats came back while it read: plan from the second read.
            let available: Vec<u32> = second.iter().map(|i| i.available).collect();
            match plan_take(&available, seats, rand::random_range(0..k)) {
                Some(plan) => placement = plan,
                None => continue,
            }
        }
        Err(CommitError::Contention)
    }

    async fn shards_or_not_found(&self, slot_id: &SlotId, shards: ShardCount) -> Result<Vec<SlotItem>, CommitError> {
        let items = self
            .read_shards(slot_id, shards)
            .await?
            .ok_or(CommitError::SlotNotFound)?;
        match self.not_home(&items) {
            Some(refusal) => Err(refusal.into()),
            None => Ok(items),
        }
    }
}

/// Every shard of a sharded slot in `table`, shard 0 first, each read consistently; `None` when
/// one is missing.
pub(crate) async fn read_shards(
    client: &Client,
    table: &str,
    slot_id: &SlotId,
    shards: ShardCount,
) -> Result<Option<Vec<SlotItem>>, StoreError> {
    const OP: &str = "BatchGetItem(slot shards)";
    let pks = shard_pks(slot_id, shards);
    let keys: Vec<Item> = pks.iter().map(|pk| HashMap::from([(PK.to_owned(), s(pk))])).collect();
    let mut request = Some(built(
        OP,
        KeysAndAttributes::builder()
            .set_keys(Some(keys))
            .consistent_read(true)
            .build(),
    )?);
    let mut found: HashMap<String, SlotItem> = HashMap::new();
    // Unprocessed keys (throttling, the response's size limit) are asked again, a few times.
    for _ in 0..8 {
        let Some(keys) = request.take() else { break };
        let out = client
            .batch_get_item()
            .request_items(table, keys)
            .send()
            .await
            .map_err(|e| store_error(OP, e))?;
        for item in out.responses.and_then(|mut r| r.remove(table)).unwrap_or_default() {
            let item: SlotItem = deserialize(OP, item)?;
            found.insert(item.pk.clone(), item);
        }
        request = out
            .unprocessed_keys
            .and_then(|mut u| u.remove(table))
            .filter(|k| !k.keys().is_empty());
    }
    if request.is_some() {
        return Err(StoreError::new(
            StoreErrorKind::Throttled,
            OP,
            "shards left unprocessed after retries",
        ));
    }
    Ok(pks.iter().map(|pk| found.remove(pk)).collect())
}

impl ReservationStore for DynamoReservationStore {
    async fn get_booking(&self, reservation_id: &ReservationId) -> Result<Option<Booking>, StoreError> {
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
            .map(|item| {
                deserialize::<ReservationItem>(OP, item).map(|i| Booking {
                    reservation: i.reservation,
                    placement: i.taken,
                })
            })
            .transpose()
    }

    async fn create_reservation(&self, change: &NewReservation) -> Result<(), CommitError> {
        let slot_id = &change.reservation.slot_id;
        // A process learns a slot's shard count once, with one consistent read of the slot item
        // (it is fixed at creation). Booking blindly as one item instead would send every cold
        // process's first booking of a sharded slot to the slot item at once, where they conflict.
        let shards = match self.known_shards(slot_id) {
            Some(shards) => shards,
            None => {
                let Some(slot) = self.get_slot_item(slot_id).await? else {
                    return Err(CommitError::SlotNotFound);
                };
                self.remember_shards(slot_id, slot.shard_count());
                slot.shard_count()
            }
        };
        if shards.is_sharded() {
            return self.book_sharded(change, shards).await;
        }
        match self.commit_booking(change, &Placement::default()).await {
            Ok(()) => Ok(()),
            Err(Refusal::Commit(err)) => Err(err),
            // One item: its failed condition is the whole slot's answer.
            Err(Refusal::Short) => Err(CommitError::SoldOut),
            Err(Refusal::Sharded(shards)) => {
                let shards = ShardCount::new(i64::from(shards))
                    .map_err(|e| StoreError::new(StoreErrorKind::Other, "create reservation", e))?;
                self.remember_shards(slot_id, shards);
                self.book_sharded(change, shards).await
            }
        }
    }

    async fn cancel_reservation(&self, change: &Cancellation) -> Result<(), CommitError> {
        const OP: &str = "TransactWriteItems(cancel reservation)";
        let now = OffsetDateTime::now_utc();
        let sharded = !change.placement.is_empty();
        let one_item = [ShardTake {
            shard: 0,
            seats: change.current.seats.get(),
        }];
        let takes = if sharded {
            &change.placement.0[..]
        } else {
            &one_item[..]
        };

        let put_cancelled = built(
            OP,
            Put::builder()
                .table_name(&self.tables.reservations_table)
                .set_item(Some(serialize(
                    OP,
                    &ReservationItem::placed(&change.cancelled, &change.placement),
                )?))
                .condition_expression("#version = :expected_version")
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":expected_version", n(change.current.version.get()))
                .build(),
        )?;
        let mut items = vec![TransactWriteItem::builder().put(put_cancelled).build()];
        for take in takes {
            // A sharded slot's shard counts the seats that come back, for the sold-out proof.
            let expression = if sharded {
                "SET #reserved = #reserved - :seats, #available = #available + :seats ADD #refills :one"
            } else {
                "SET #reserved = #reserved - :seats, #available = #available + :seats"
            };
            let mut update = Update::builder()
                .table_name(&self.tables.reservations_table)
                .key(PK, s(shard_pk(&change.current.slot_id, take.shard)))
                .update_expression(expression)
                .condition_expression(format!(
                    "attribute_exists(pk) AND #reserved >= :seats AND {}",
                    self.home().condition()
                ))
                .expression_attribute_names("#reserved", "reserved")
                .expression_attribute_names("#available", "available")
                .expression_attribute_names("#home_region", HOME_REGION)
                .expression_attribute_values(":seats", n(take.seats))
                .expression_attribute_values(":here", s(&self.tables.regions.here))
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
            if sharded {
                update = update
                    .expression_attribute_names("#refills", REFILLS)
                    .expression_attribute_values(":one", n(1));
            }
            items.push(TransactWriteItem::builder().update(built(OP, update.build())?).build());
        }
        items.push(self.outbox_put(OP, &change.event, now)?);
        match self.transact(OP, items).await {
            Ok(()) => Ok(()),
            Err(TransactionOutcome::Cancelled(reasons)) => Err(reasons.for_cancellation(&self.home(), takes.len())),
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
