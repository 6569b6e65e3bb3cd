//! The polling publisher's side of the outbox table: the sparse `unpublished-events` index, the
//! conditional write that clears an item's mark once it is on the stream, and the publisher lease
//! (docs/adr/0004-polling-publisher.md).

use super::errors::{is_conditional_check_failure, store_error};
use super::items::{BORN_IN, OUTBOX_ITEM_TYPE, UNPUBLISHED, UNPUBLISHED_INDEX, UNPUBLISHED_PENDING, unpublished_mark};
use super::{Item, n, s};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::Select;
use domain::ports::{
    OutboxKey, PendingEvent, PublisherLease, StoreError, StoreErrorKind, UndecodableItem, UnpublishedEvents,
};
use domain::{EventEnvelope, EventId};
use futures::StreamExt;
use settings::Regions;
use time::OffsetDateTime;

/// The lease lives in the outbox table under a key no reservation can have (reservation ids are
/// ULIDs), with its own `item_type`, so neither relay ever takes it for an event.
pub const LEASE_AGGREGATE_ID: &str = "#publisher-lease";
pub const LEASE_ITEM_TYPE: &str = "PublisherLease";
/// Marks written at once by the recovery sweep.
const SWEEP_CONCURRENCY: usize = 16;

#[derive(Debug, Clone)]
pub struct DynamoOutbox {
    client: Client,
    table: String,
    /// The `unpublished` mark this Region's poller looks for ([`unpublished_mark`]).
    mark: String,
    /// The lease's key: one per Region, since each Region's poller publishes its own events and
    /// a lease item replicated from another Region must not hold this one's poller off.
    lease_id: String,
    /// `Some`: the Regions of a global table, and the sweep marks only the events this Region
    /// publishes (born here, or, in the primary, before items recorded their Region).
    regions: Option<Regions>,
}

impl DynamoOutbox {
    /// The outbox of a table in one Region: every event in it is this poller's to publish.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            mark: UNPUBLISHED_PENDING.to_owned(),
            lease_id: LEASE_AGGREGATE_ID.to_owned(),
            regions: None,
        }
    }

    /// The outbox as Region `regions.here`'s poller sees it (docs/multi-region.md).
    pub fn in_region(client: Client, table: impl Into<String>, regions: &Regions) -> Self {
        let lease_id = if regions.is_primary() {
            LEASE_AGGREGATE_ID.to_owned()
        } else {
            format!("{LEASE_AGGREGATE_ID}#{}", regions.here)
        };
        Self {
            mark: unpublished_mark(regions),
            lease_id,
            regions: Some(regions.clone()),
            ..Self::new(client, table)
        }
    }

    fn key(&self, key: &OutboxKey) -> Item {
        Item::from([
            ("aggregate_id".to_owned(), s(&key.aggregate_id)),
            ("version".to_owned(), n(key.version)),
        ])
    }

    fn lease_key(&self) -> Item {
        self.key(&OutboxKey {
            aggregate_id: self.lease_id.clone(),
            version: 0,
        })
    }
}

impl DynamoOutbox {
    /// Marks one event unpublished, if it still exists: an update would otherwise create a stub
    /// item for an event TTL removed a moment ago.
    async fn mark_unpublished(&self, key: &OutboxKey) -> Result<bool, StoreError> {
        const OP: &str = "UpdateItem(mark unpublished)";
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key(key)))
            .update_expression("SET #unpublished = :pending")
            .condition_expression("attribute_exists(aggregate_id)")
            .expression_attribute_names("#unpublished", UNPUBLISHED)
            .expression_attribute_values(":pending", s(&self.mark))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_conditional_check_failure(&e) => Ok(false),
            Err(e) => Err(store_error(OP, e)),
        }
    }
}

impl DynamoOutbox {
    /// One reservation's versions, lowest first.
    async fn mark_reservation_unpublished(&self, mut keys: Vec<OutboxKey>) -> Result<u64, StoreError> {
        keys.sort();
        let mut marked = 0;
        for key in &keys {
            marked += u64::from(self.mark_unpublished(key).await?);
        }
        Ok(marked)
    }
}

fn outbox_key(item: &Item) -> Result<OutboxKey, StoreError> {
    let aggregate_id = item.get("aggregate_id").and_then(|v| v.as_s().ok()).cloned();
    let version = item
        .get("version")
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok());
    match (aggregate_id, version) {
        (Some(aggregate_id), Some(version)) => Ok(OutboxKey { aggregate_id, version }),
        _ => Err(StoreError::new(
            StoreErrorKind::Other,
            "Query(unpublished events)",
            format!(
                "index returned an item without the outbox key: {:?}",
                item.keys().collect::<Vec<_>>()
            ),
        )),
    }
}

fn pending_event(item: Item) -> Result<PendingEvent, StoreError> {
    let key = outbox_key(&item)?;
    let event = match serde_dynamo::aws_sdk_dynamodb_1::from_item::<EventEnvelope>(item.clone()) {
        Ok(envelope) => Ok(envelope),
        Err(e) => Err(UndecodableItem {
            reason: format!("outbox item is not a valid event envelope: {e}"),
            item: serde_dynamo::aws_sdk_dynamodb_1::from_item(item).unwrap_or(serde_json::Value::Null),
        }),
    };
    Ok(PendingEvent { key, event })
}

impl UnpublishedEvents for DynamoOutbox {
    async fn pending(&self, limit: usize) -> Result<Vec<PendingEvent>, StoreError> {
        const OP: &str = "Query(unpublished events)";
        let mut events = Vec::new();
        let mut start = None;
        while events.len() < limit {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(UNPUBLISHED_INDEX)
                .key_condition_expression("#unpublished = :pending")
                .expression_attribute_names("#unpublished", UNPUBLISHED)
                .expression_attribute_values(":pending", s(&self.mark))
                .limit(i32::try_from(limit - events.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| store_error(OP, e))?;
            for item in page.items().iter().cloned() {
                events.push(pending_event(item)?);
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
        Ok(events)
    }

    async fn earlier_unpublished(&self, key: &OutboxKey) -> Result<bool, StoreError> {
        const OP: &str = "Query(earlier unpublished versions)";
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("aggregate_id = :id AND #version < :version")
                .filter_expression("attribute_exists(#unpublished)")
                .expression_attribute_names("#version", "version")
                .expression_attribute_names("#unpublished", UNPUBLISHED)
                .expression_attribute_values(":id", s(&key.aggregate_id))
                .expression_attribute_values(":version", n(key.version))
                .select(Select::Count)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| store_error(OP, e))?;
            if page.count() > 0 {
                return Ok(true);
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(false);
            }
        }
    }

    async fn mark_published(&self, key: &OutboxKey) -> Result<bool, StoreError> {
        const OP: &str = "UpdateItem(mark published)";
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key(key)))
            .update_expression("REMOVE #unpublished")
            .condition_expression("attribute_exists(#unpublished)")
            .expression_attribute_names("#unpublished", UNPUBLISHED)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_conditional_check_failure(&e) => Ok(false),
            Err(e) => Err(store_error(OP, e)),
        }
    }

    async fn mark_unpublished_since(&self, since: OffsetDateTime) -> Result<u64, StoreError> {
        const SCAN: &str = "Scan(outbox since)";
        let floor = EventId::lower_bound_at(since);
        let mut marked = 0;
        let mut start = None;
        loop {
            let scan = self
                .client
                .scan()
                .table_name(&self.table)
                .projection_expression("aggregate_id, #version")
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":outbox", s(OUTBOX_ITEM_TYPE))
                .expression_attribute_values(":floor", s(floor.as_str()));
            let scan = match &self.regions {
                None => scan.filter_expression("item_type = :outbox AND event_id >= :floor"),
                Some(regions) => scan
                    .filter_expression(if regions.is_primary() {
                        "item_type = :outbox AND event_id >= :floor AND (attribute_not_exists(#born_in) OR #born_in = :here)"
                    } else {
                        "item_type = :outbox AND event_id >= :floor AND #born_in = :here"
                    })
                    .expression_attribute_names("#born_in", BORN_IN)
                    .expression_attribute_values(":here", s(&regions.here)),
            };
            let page = scan
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| store_error(SCAN, e))?;
            let keys = page.items().iter().map(outbox_key).collect::<Result<Vec<_>, _>>()?;
            // A reservation's versions are marked one after another, lowest first, so a poller
            // running meanwhile never sees a later version marked while an earlier one is not yet.
            let mut by_reservation: Vec<Vec<OutboxKey>> = Vec::new();
            for key in keys {
                match by_reservation
                    .iter_mut()
                    .find(|g| g[0].aggregate_id == key.aggregate_id)
                {
                    Some(group) => group.push(key),
                    None => by_reservation.push(vec![key]),
                }
            }
            let mut marks = Vec::with_capacity(by_reservation.len());
            for group in by_reservation {
                marks.push(self.mark_reservation_unpublished(group));
            }
            let results: Vec<Result<u64, StoreError>> = futures::stream::iter(marks)
                .buffer_unordered(SWEEP_CONCURRENCY)
                .collect()
                .await;
            for result in results {
                marked += result?;
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(marked);
            }
        }
    }
}

fn epoch_ms(at: OffsetDateTime) -> i128 {
    at.unix_timestamp_nanos() / 1_000_000
}

impl PublisherLease for DynamoOutbox {
    async fn acquire(&self, holder: &str, now: OffsetDateTime, until: OffsetDateTime) -> Result<bool, StoreError> {
        const OP: &str = "UpdateItem(publisher lease)";
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.lease_key()))
            .update_expression("SET holder = :holder, lease_until = :until, item_type = :lease")
            .condition_expression("attribute_not_exists(holder) OR holder = :holder OR lease_until < :now")
            .expression_attribute_values(":holder", s(holder))
            .expression_attribute_values(":until", n(epoch_ms(until)))
            .expression_attribute_values(":now", n(epoch_ms(now)))
            .expression_attribute_values(":lease", s(LEASE_ITEM_TYPE))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_conditional_check_failure(&e) => Ok(false),
            Err(e) => Err(store_error(OP, e)),
        }
    }

    async fn release(&self, holder: &str) -> Result<(), StoreError> {
        const OP: &str = "DeleteItem(publisher lease)";
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(self.lease_key()))
            .condition_expression("holder = :holder")
            .expression_attribute_values(":holder", s(holder))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_conditional_check_failure(&e) => Ok(()),
            Err(e) => Err(store_error(OP, e)),
        }
    }
}
