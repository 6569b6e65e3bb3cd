//! Where each slot is at home, as the operator's commands change it (docs/multi-region.md,
//! "Moving a slot's home" and "When a Region is lost"): the slot item's `home_region`,
//! `moving_to` and `taken_over_from`, and the claim that decides which Region takes over a lost
//! one. With the store ([`super::DynamoReservationStore`]) this is the one module that writes
//! slot items, and both take their layout from [`super::items`].
//!
//! Two rules make a home impossible to decide twice:
//! - every change of a slot's home or move is a conditional write **in the slot's current home**
//!   (freezing it, naming the new home, ending a move), so two changes exclude each other in
//!   one Region's replica, whatever replication does;
//! - every read here is consistent: a move that read an eventually consistent replica could miss
//!   what was committed a moment before the freeze.
//!
//! Only a lost Region cannot write its slots' changes; the Region that takes over writes them in
//! its own replica, after winning the claim ([`SlotHomes::claim_takeover`]) that a single Region
//! decides.

use super::errors::{TransactionOutcome, classify_transaction_error, is_conditional_check_failure, store_error};
use super::items::{
    BORN_IN, HOME_REGION, MOVING_TO, OUTBOX_PARTITION_KEY, OUTBOX_SORT_KEY, OutboxItem, PK, SlotHome, SlotItem, slot_pk,
};
use super::{Item, built, deserialize, s, serialize};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use domain::ports::{StoreError, StoreErrorKind};
use domain::{EventEnvelope, SlotId};
use settings::Regions;
use std::collections::{BTreeMap, HashMap};

/// The item that records who took over a lost Region, in the reservations table.
const TAKEOVER_ITEM_TYPE: &str = "TakeoverClaim";

fn takeover_pk(lost: &str) -> String {
    format!("TAKEOVER#{lost}")
}

/// One Region's replica as the home commands read and write it.
#[derive(Debug, Clone)]
pub struct SlotHomes {
    client: Client,
    reservations_table: String,
    outbox_table: String,
    regions: Regions,
}

/// What the old home wrote for a slot: what its new home must hold before it takes writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WrittenForSlot {
    /// Reservation item key to the version this replica holds.
    pub reservations: BTreeMap<String, u64>,
    /// Keys of the idempotency records whose stored answer names the slot.
    pub idempotency_records: Vec<String>,
}

/// Who holds the takeover of a lost Region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakeoverClaim {
    pub lost: String,
    pub heir: String,
    pub claimed_at: String,
}

impl SlotHomes {
    pub fn new(
        client: Client,
        reservations_table: impl Into<String>,
        outbox_table: impl Into<String>,
        regions: Regions,
    ) -> Self {
        Self {
            client,
            reservations_table: reservations_table.into(),
            outbox_table: outbox_table.into(),
            regions,
        }
    }

    /// This Region and the primary.
    pub fn regions(&self) -> &Regions {
        &self.regions
    }

    /// The Region a slot item names as its home (the primary's when it names none).
    pub fn home_of<'a>(&'a self, slot: &'a SlotItem) -> &'a str {
        slot.home_region.as_deref().unwrap_or(&self.regions.primary)
    }

    pub async fn slot(&self, slot_id: &SlotId) -> Result<Option<SlotItem>, StoreError> {
        const OP: &str = "GetItem(slot)";
        self.get(
            OP,
            &self.reservations_table,
            HashMap::from([(PK.to_owned(), s(slot_pk(slot_id)))]),
        )
        .await?
        .map(|item| deserialize(OP, item))
        .transpose()
    }

    /// Every inventory item of a slot as this replica holds it, the slot item first: the one
    /// item of a slot of one shard, every shard of a sharded one. `None` when the slot item is
    /// not here; a shard that is not here (yet) is left out.
    pub async fn slot_shards(&self, slot_id: &SlotId) -> Result<Option<Vec<SlotItem>>, StoreError> {
        let Some(slot) = self.slot(slot_id).await? else {
            return Ok(None);
        };
        let shards = slot.shard_count();
        if !shards.is_sharded() {
            return Ok(Some(vec![slot]));
        }
        let items = super::read_shards(&self.client, &self.reservations_table, slot_id, shards).await?;
        Ok(Some(items.into_iter().flatten().collect()))
    }

    /// Every slot this replica holds (their slot items; a sharded slot's other shards are read
    /// with [`Self::slot_shards`]).
    pub async fn slots(&self) -> Result<Vec<SlotItem>, StoreError> {
        const OP: &str = "Scan(slots)";
        self.scan(
            OP,
            &self.reservations_table,
            "item_type = :slot",
            &[(":slot", s("Slot"))],
        )
        .await?
        .into_iter()
        .map(|item| deserialize(OP, item))
        .collect()
    }

    /// In the slot's home (this Region): marks it moving to `to`, on the condition that it is at
    /// home here and not moving. From then on no Region writes it. False when the condition
    /// failed.
    pub async fn begin_move(&self, slot_id: &SlotId, to: &str) -> Result<bool, StoreError> {
        let home = SlotHome(self.regions.clone());
        self.update_slot(
            "UpdateItem(begin move)",
            slot_id,
            "SET #moving_to = :to",
            &format!("attribute_exists(pk) AND {}", home.condition()),
            to,
        )
        .await
    }

    /// In the slot's old home (this Region): names `to` its home and ends the move, on the
    /// condition that it is still at home here and moving to `to`. Exclusive with
    /// [`Self::abort_move`]: both are decided by this one replica.
    pub async fn finish_move(&self, slot_id: &SlotId, to: &str) -> Result<bool, StoreError> {
        self.update_slot(
            "UpdateItem(finish move)",
            slot_id,
            "SET #home_region = :to REMOVE #moving_to",
            &format!("#moving_to = :to AND {}", self.at_home_here()),
            to,
        )
        .await
    }

    /// In the slot's home (this Region): ends a move to `to` that has not finished, on the
    /// condition that it is still at home here and moving to `to`.
    pub async fn abort_move(&self, slot_id: &SlotId, to: &str) -> Result<bool, StoreError> {
        self.update_slot(
            "UpdateItem(abort move)",
            slot_id,
            "REMOVE #moving_to",
            &format!("#moving_to = :to AND {}", self.at_home_here()),
            to,
        )
        .await
    }

    /// The condition that the slot is at home here, over `#home_region` and `:here`.
    fn at_home_here(&self) -> &'static str {
        if self.regions.is_primary() {
            "(attribute_not_exists(#home_region) OR #home_region = :here)"
        } else {
            "#home_region = :here"
        }
    }

    /// Applies `update` under `condition` to every shard of the slot (its one item, or every
    /// shard of a sharded slot in one transaction, so a home never differs between shards
    /// in the Region that writes it). False when the condition failed on one, or the slot is not
    /// here. Bookings in flight on a shard conflict with the transaction: it is tried again.
    async fn update_slot(
        &self,
        operation: &'static str,
        slot_id: &SlotId,
        update: &str,
        condition: &str,
        to: &str,
    ) -> Result<bool, StoreError> {
        let Some(slot) = self.slot(slot_id).await? else {
            return Ok(false);
        };
        let shards = slot.shard_count();
        if !shards.is_sharded() {
            let sent = self
                .client
                .update_item()
                .table_name(&self.reservations_table)
                .key(PK, s(slot_pk(slot_id)))
                .update_expression(update)
                .condition_expression(condition)
                .expression_attribute_names("#home_region", HOME_REGION)
                .expression_attribute_names("#moving_to", MOVING_TO)
                .expression_attribute_values(":here", s(&self.regions.here))
                .expression_attribute_values(":to", s(to))
                .send()
                .await;
            return match sent {
                Ok(_) => Ok(true),
                Err(e) if is_conditional_check_failure(&e) => Ok(false),
                Err(e) => Err(store_error(operation, e)),
            };
        }
        let mut items = Vec::new();
        for pk in super::items::shard_pks(slot_id, shards) {
            let write = built(
                operation,
                Update::builder()
                    .table_name(&self.reservations_table)
                    .key(PK, s(pk))
                    .update_expression(update)
                    .condition_expression(condition)
                    .expression_attribute_names("#home_region", HOME_REGION)
                    .expression_attribute_names("#moving_to", MOVING_TO)
                    .expression_attribute_values(":here", s(&self.regions.here))
                    .expression_attribute_values(":to", s(to))
                    .build(),
            )?;
            items.push(TransactWriteItem::builder().update(write).build());
        }
        self.transact_shards(operation, items).await
    }

    /// One transaction over a slot's shards: true when it committed, false when a condition
    /// failed; conflicts with bookings in flight are tried again, a bounded number of times.
    async fn transact_shards(
        &self,
        operation: &'static str,
        items: Vec<TransactWriteItem>,
    ) -> Result<bool, StoreError> {
        let count = items.len();
        let mut attempt = 0u32;
        loop {
            let sent = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await
                .map_err(|err| classify_transaction_error(operation, err));
            match sent {
                Ok(_) => return Ok(true),
                Err(TransactionOutcome::Cancelled(reasons)) if reasons.condition_failed_in(count) => return Ok(false),
                Err(TransactionOutcome::Cancelled(reasons)) => match reasons.commit_error() {
                    domain::ports::CommitError::Contention if attempt < 20 => {}
                    domain::ports::CommitError::Store(e) => return Err(e),
                    other => return Err(StoreError::new(StoreErrorKind::Contended, operation, other.to_string())),
                },
                Err(TransactionOutcome::Failed(err)) => return Err(err),
            }
            attempt += 1;
            tokio::time::sleep(
                domain::Backoff::new(
                    std::time::Duration::from_millis(10),
                    std::time::Duration::from_millis(200),
                )
                .delay(attempt),
            )
            .await;
        }
    }

    /// Names this Region the home of a slot whose inventory items are `shards` (the slot item
    /// first; read in this replica, or in another one when `held_here` is false), marked taken
    /// over from `lost`, on the condition that each still stands as read (or, not held here, is
    /// still not here). A sharded slot's shards change in one transaction.
    pub async fn take_home(&self, shards: &[SlotItem], lost: &str, held_here: bool) -> Result<bool, StoreError> {
        if !held_here {
            const OP: &str = "PutItem(take over a slot)";
            let mut puts = Vec::new();
            for shard in shards {
                let item = serialize(
                    OP,
                    &SlotItem {
                        home_region: Some(self.regions.here.clone()),
                        moving_to: None,
                        taken_over_from: Some(lost.to_owned()),
                        ..shard.clone()
                    },
                )?;
                let put = built(
                    OP,
                    Put::builder()
                        .table_name(&self.reservations_table)
                        .set_item(Some(item))
                        .condition_expression("attribute_not_exists(pk)")
                        .build(),
                )?;
                puts.push(TransactWriteItem::builder().put(put).build());
            }
            return self.transact_shards(OP, puts).await;
        }
        const OP: &str = "UpdateItem(take over a slot)";
        let mut updates = Vec::new();
        for shard in shards {
            let mut request = Update::builder()
                .table_name(&self.reservations_table)
                .key(PK, s(&shard.pk))
                .update_expression("SET #home_region = :here, taken_over_from = :lost REMOVE #moving_to")
                .expression_attribute_names("#home_region", HOME_REGION)
                .expression_attribute_names("#moving_to", MOVING_TO)
                .expression_attribute_values(":here", s(&self.regions.here))
                .expression_attribute_values(":lost", s(lost));
            let home_as_read = match &shard.home_region {
                Some(home) => {
                    request = request.expression_attribute_values(":home", s(home));
                    "#home_region = :home"
                }
                None => "attribute_not_exists(#home_region)",
            };
            let moving_as_read = match &shard.moving_to {
                Some(moving) => {
                    request = request.expression_attribute_values(":moving", s(moving));
                    "#moving_to = :moving"
                }
                None => "attribute_not_exists(#moving_to)",
            };
            let update = built(
                OP,
                request
                    .condition_expression(format!("attribute_exists(pk) AND {home_as_read} AND {moving_as_read}"))
                    .build(),
            )?;
            updates.push(TransactWriteItem::builder().update(update).build());
        }
        self.transact_shards(OP, updates).await
    }

    /// Claims, in this replica, the takeover of `lost` for `heir`: the claim is made once; a
    /// repeat by the same heir holds it again. Returns who holds it. Call it on the one Region
    /// that decides takeovers (docs/multi-region.md), never on a replica of one's own choosing.
    pub async fn claim_takeover(&self, lost: &str, heir: &str, now: &str) -> Result<TakeoverClaim, StoreError> {
        const OP: &str = "PutItem(takeover claim)";
        let item: Item = HashMap::from([
            (PK.to_owned(), s(takeover_pk(lost))),
            ("item_type".to_owned(), s(TAKEOVER_ITEM_TYPE)),
            ("lost".to_owned(), s(lost)),
            ("heir".to_owned(), s(heir)),
            ("claimed_at".to_owned(), s(now)),
        ]);
        let put = self
            .client
            .put_item()
            .table_name(&self.reservations_table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match put {
            Ok(_) => Ok(TakeoverClaim {
                lost: lost.to_owned(),
                heir: heir.to_owned(),
                claimed_at: now.to_owned(),
            }),
            Err(e) if is_conditional_check_failure(&e) => self
                .takeover_claim(lost)
                .await?
                .ok_or_else(|| StoreError::new(StoreErrorKind::Other, OP, "the claim vanished as it was read")),
            Err(e) => Err(store_error(OP, e)),
        }
    }

    /// The Regions of the global table's replicas, as DynamoDB describes the reservations table
    /// (empty for a table that is not global, and on engines that keep no replicas).
    pub async fn replica_regions(&self) -> Result<Vec<String>, StoreError> {
        let described = self
            .client
            .describe_table()
            .table_name(&self.reservations_table)
            .send()
            .await
            .map_err(|e| store_error("DescribeTable", e))?;
        Ok(described
            .table()
            .map(|table| table.replicas())
            .unwrap_or_default()
            .iter()
            .filter_map(|replica| replica.region_name().map(str::to_owned))
            .collect())
    }

    /// Removes the claim on `lost`, on the condition that `heir` holds it: false when it did not.
    pub async fn release_takeover(&self, lost: &str, heir: &str) -> Result<bool, StoreError> {
        const OP: &str = "DeleteItem(takeover claim)";
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.reservations_table)
            .key(PK, s(takeover_pk(lost)))
            .condition_expression("heir = :heir")
            .expression_attribute_values(":heir", s(heir))
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(true),
            Err(e) if is_conditional_check_failure(&e) => Ok(false),
            Err(e) => Err(store_error(OP, e)),
        }
    }

    /// Who took over `lost`, if anyone, as this replica holds it.
    pub async fn takeover_claim(&self, lost: &str) -> Result<Option<TakeoverClaim>, StoreError> {
        const OP: &str = "GetItem(takeover claim)";
        let item = self
            .get(
                OP,
                &self.reservations_table,
                HashMap::from([(PK.to_owned(), s(takeover_pk(lost)))]),
            )
            .await?;
        Ok(item.map(|item| {
            let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
            TakeoverClaim {
                lost: text("lost"),
                heir: text("heir"),
                claimed_at: text("claimed_at"),
            }
        }))
    }

    /// What this replica holds of what was written for `slot_id`: its reservations (at their
    /// versions) and the idempotency records whose stored answer names it. A scan, read
    /// consistently: the tables have no index by slot.
    pub async fn written_for_slot(&self, slot_id: &SlotId) -> Result<WrittenForSlot, StoreError> {
        const OP: &str = "Scan(written for a slot)";
        let items = self
            .scan(
                OP,
                &self.reservations_table,
                "(item_type = :reservation AND slot_id = :slot) OR item_type = :idempotency",
                &[
                    (":reservation", s("Reservation")),
                    (":idempotency", s("IdempotencyRecord")),
                    (":slot", s(slot_id.as_str())),
                ],
            )
            .await?;
        let mut written = WrittenForSlot::default();
        for item in items {
            let pk = item.get(PK).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
            if item.get("item_type").and_then(|t| t.as_s().ok()).map(String::as_str) == Some("Reservation") {
                let reservation: super::items::ReservationItem = deserialize(OP, item)?;
                written.reservations.insert(pk, reservation.reservation.version.get());
            } else if answers_for_slot(&item, slot_id) {
                written.idempotency_records.push(pk);
            }
        }
        Ok(written)
    }

    /// Whether this replica holds the reservation item `pk` at `version` or later.
    pub async fn holds_reservation(&self, pk: &str, version: u64) -> Result<bool, StoreError> {
        let item = self
            .get(
                "GetItem(reservation)",
                &self.reservations_table,
                HashMap::from([(PK.to_owned(), s(pk))]),
            )
            .await?;
        Ok(item
            .and_then(|item| {
                item.get("version")
                    .and_then(|v| v.as_n().ok())
                    .and_then(|v| v.parse::<u64>().ok())
            })
            .is_some_and(|held| held >= version))
    }

    /// Whether this replica holds the item `pk` of the reservations table.
    pub async fn holds(&self, pk: &str) -> Result<bool, StoreError> {
        Ok(self
            .get(
                "GetItem",
                &self.reservations_table,
                HashMap::from([(PK.to_owned(), s(pk))]),
            )
            .await?
            .is_some())
    }

    /// The outbox event of `reservation_id` at `version`, if this replica holds it (an event past
    /// the outbox's TTL is gone); `Err` when the item is no outbox event.
    pub async fn event(&self, reservation_id: &str, version: u64) -> Result<Option<OutboxItem>, StoreError> {
        const OP: &str = "GetItem(outbox event)";
        let key = HashMap::from([
            (OUTBOX_PARTITION_KEY.to_owned(), s(reservation_id)),
            (OUTBOX_SORT_KEY.to_owned(), AttributeValue::N(version.to_string())),
        ]);
        self.get(OP, &self.outbox_table, key)
            .await?
            .map(|item| deserialize(OP, item))
            .transpose()
    }

    /// The events this replica holds that were born in `region` (with the primary's, those from
    /// before items recorded their Region), each reservation's in version order, and how many
    /// outbox items could not be read as events.
    pub async fn events_born_in(&self, region: &str) -> Result<(Vec<EventEnvelope>, usize), StoreError> {
        const OP: &str = "Scan(events born in a Region)";
        let filter = if region == self.regions.primary {
            "item_type = :outbox AND (#born_in = :region OR attribute_not_exists(#born_in))"
        } else {
            "item_type = :outbox AND #born_in = :region"
        };
        let items = self
            .scan(
                OP,
                &self.outbox_table,
                filter,
                &[(":outbox", s(domain::OUTBOX_ITEM_TYPE)), (":region", s(region))],
            )
            .await?;
        let mut envelopes = Vec::new();
        let mut undecodable = 0;
        for item in items {
            match deserialize::<OutboxItem>(OP, item) {
                Ok(outbox) => envelopes.push(outbox.envelope),
                Err(_) => undecodable += 1,
            }
        }
        envelopes.sort_by(|a, b| (a.aggregate_id.as_str(), a.version).cmp(&(b.aggregate_id.as_str(), b.version)));
        Ok((envelopes, undecodable))
    }

    async fn get(&self, operation: &'static str, table: &str, key: Item) -> Result<Option<Item>, StoreError> {
        let read = self
            .client
            .get_item()
            .table_name(table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error(operation, e))?;
        Ok(read.item)
    }

    /// Every item of `table` that `filter` keeps, page after page, read consistently.
    async fn scan(
        &self,
        operation: &'static str,
        table: &str,
        filter: &str,
        values: &[(&str, AttributeValue)],
    ) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let mut request = self
                .client
                .scan()
                .table_name(table)
                .consistent_read(true)
                .filter_expression(filter)
                .set_exclusive_start_key(start);
            for (name, value) in values {
                request = request.expression_attribute_values(*name, value.clone());
            }
            if filter.contains("#born_in") {
                request = request.expression_attribute_names("#born_in", BORN_IN);
            }
            let page = request.send().await.map_err(|e| store_error(operation, e))?;
            items.extend(page.items().iter().cloned());
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(items);
            }
        }
    }
}

/// Whether an idempotency record answered a request for `slot_id`: its stored answer names it.
fn answers_for_slot(item: &Item, slot_id: &SlotId) -> bool {
    item.get("response_body")
        .and_then(|body| body.as_s().ok())
        .and_then(|body| serde_json::from_str::<serde_json::Value>(body).ok())
        .is_some_and(|body| body["slot_id"].as_str() == Some(slot_id.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idempotency_record_belongs_to_the_slot_its_stored_answer_names() {
        let record = |body: &str| Item::from([("response_body".to_owned(), s(body))]);
        let slot = SlotId::parse("dinner").unwrap();
        assert!(answers_for_slot(&record(r#"{"slot_id":"dinner","seats":2}"#), &slot));
        assert!(!answers_for_slot(&record(r#"{"slot_id":"lunch"}"#), &slot));
        assert!(!answers_for_slot(&record("not json"), &slot));
        assert!(!answers_for_slot(&Item::new(), &slot));
    }
}
