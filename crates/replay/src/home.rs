//! Moving a slot's home between Regions (docs/multi-region.md, "Moving a slot's home"): a planned
//! move between two Regions that both run ([`move_home`], [`abort_move`]), and the takeover of a
//! lost Region's slots by a Region that runs ([`take_over`]).
//!
//! A planned move goes through a state in which no Region writes the slot (`moving_to` on the
//! slot item, answered 503 `home_moving`), waits until the new home's replica holds everything
//! the old home wrote for the slot and both Regions' consumers hold its reservations' latest
//! versions, and only then names the new home, in the new home's replica. Every step can be run
//! again: a move that stopped half-way goes on from where it stands.

use crate::audit::{AppliedVersions, reservation_event};
use adapters::dynamodb::items::{
    BORN_IN, HOME_REGION, MOVING_TO, OUTBOX_PARTITION_KEY, OUTBOX_SORT_KEY, OutboxItem, PK, ReservationItem, SlotHome,
    SlotItem, slot_pk,
};
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::AttributeValue;
use domain::{ReservationEvent, SlotId};
use relay::{EventSink, PublishPolicy, SinkRecord, publish_in_order};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::time::Instant;

type Item = HashMap<String, AttributeValue>;

/// One Region of the deployment as a move sees it: its replica of the global tables and its
/// consumers' state (their tables replicated too, so either Region's consumers see the other's).
pub struct Replica {
    /// This Region and the deployment's primary (slots without a home are the primary's).
    pub regions: settings::Regions,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub reservations_table: String,
    pub outbox_table: String,
    /// The consumers whose state a move waits for; empty waits for none.
    pub consumers: Vec<Box<dyn AppliedVersions>>,
}

impl Replica {
    fn region(&self) -> &str {
        &self.regions.here
    }

    /// The Region a slot item names as its home (the primary's when it names none).
    fn home_of<'a>(&'a self, slot: &'a SlotItem) -> &'a str {
        slot.home_region.as_deref().unwrap_or(&self.regions.primary)
    }

    async fn slot(&self, slot_id: &SlotId) -> Result<Option<SlotItem>, MoveError> {
        let read = self
            .dynamodb
            .get_item()
            .table_name(&self.reservations_table)
            .key(PK, AttributeValue::S(slot_pk(slot_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.failed("reading the slot", e))?;
        read.item
            .map(|item| {
                serde_dynamo::aws_sdk_dynamodb_1::from_item(item).map_err(|e| self.failed("reading the slot", e))
            })
            .transpose()
    }

    async fn get(&self, table: &str, key: Item) -> Result<Option<Item>, MoveError> {
        let read = self
            .dynamodb
            .get_item()
            .table_name(table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.failed("reading an item", e))?;
        Ok(read.item)
    }

    /// Every item of `table` that `filter` keeps, page after page.
    async fn scan(&self, table: &str, filter: &str, values: &[(&str, AttributeValue)]) -> Result<Vec<Item>, MoveError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let mut request = self
                .dynamodb
                .scan()
                .table_name(table)
                .filter_expression(filter)
                .set_exclusive_start_key(start);
            for (name, value) in values {
                request = request.expression_attribute_values(*name, value.clone());
            }
            if filter.contains("#born_in") {
                request = request.expression_attribute_names("#born_in", BORN_IN);
            }
            let page = request.send().await.map_err(|e| self.failed("scanning a table", e))?;
            items.extend(page.items().iter().cloned());
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(items);
            }
        }
    }

    /// Whether this replica shows the slot at home here and not moving: a move to here finished.
    async fn holds_home_of(&self, slot_id: &SlotId) -> Result<bool, MoveError> {
        Ok(self
            .slot(slot_id)
            .await?
            .is_some_and(|slot| slot.moving_to.is_none() && self.home_of(&slot) == self.region()))
    }

    /// An update of the slot item `pk` in this replica's reservations table.
    fn slot_update(&self, pk: String) -> UpdateItemFluentBuilder {
        self.dynamodb
            .update_item()
            .table_name(&self.reservations_table)
            .key(PK, AttributeValue::S(pk))
    }

    /// Sends a conditional update of a slot: `false` when its condition did not hold.
    async fn conditionally(&self, what: &'static str, update: UpdateItemFluentBuilder) -> Result<bool, MoveError> {
        match update.send().await {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(self.failed(what, e)),
        }
    }

    fn failed(&self, what: &'static str, source: impl std::error::Error + Send + Sync + 'static) -> MoveError {
        MoveError::Store {
            what,
            region: self.region().to_owned(),
            source: Box::new(source),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error("slot {slot} does not exist in {region}")]
    SlotNotFound { slot: String, region: String },
    #[error("slot {slot} is at home in {home}, not {from}: move it from {home}")]
    NotHomeThere { slot: String, home: String, from: String },
    #[error("slot {slot} is moving to {to}: finish that move (move it to {to} again) or abort it first")]
    MovingElsewhere { slot: String, to: String },
    #[error("the two Regions are both {0}: a move needs two Regions")]
    SameRegion(String),
    #[error(
        "slot {slot} is still moving to {to} after {waited:?}, waiting for {waiting}; no Region writes it until \
         the move ends: run the same move again to go on, or abort it to keep the slot in {from}"
    )]
    StillReplicating {
        slot: String,
        from: String,
        to: String,
        waited: Duration,
        waiting: String,
    },
    #[error("slot {slot} is at home in {to} already: the move finished, there is nothing to abort")]
    AlreadyMoved { slot: String, to: String },
    #[error("slot {slot} is not moving to {to}: nothing to abort")]
    NotMoving { slot: String, to: String },
    #[error("slot {slot} was written by someone else during the move ({found}); look at it and run the move again")]
    Raced { slot: String, found: String },
    #[error("{region} is this Region: a takeover is run in a Region that runs, for another")]
    TakeoverOfItself { region: String },
    #[error(
        "the takeover republished {published} of {events} events of {lost} before giving up ({error}); no home was taken: run it again"
    )]
    Republish {
        lost: String,
        events: usize,
        published: usize,
        error: String,
    },
    #[error("{what} in {region} failed")]
    Store {
        what: &'static str,
        region: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// How long a move waits for replication, and how often it looks.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    pub wait: Duration,
    pub poll: Duration,
}

impl Default for Patience {
    fn default() -> Self {
        Self {
            wait: Duration::from_secs(300),
            poll: Duration::from_millis(200),
        }
    }
}

/// What a planned move did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MoveReport {
    pub slot: String,
    pub from: String,
    pub to: String,
    /// False when the slot was at home in `to` already (a repeated move changes nothing).
    pub moved: bool,
    /// What the move waited for in `to`: the slot's reservations and idempotency records.
    pub reservations: usize,
    pub idempotency_records: usize,
    /// Consumer states checked (each consumer of each Region, for each reservation).
    pub consumer_checks: usize,
    pub waited_ms: u128,
}

impl std::fmt::Display for MoveReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.moved {
            return write!(f, "slot {} is at home in {} already: nothing to do", self.slot, self.to);
        }
        write!(
            f,
            "slot {} moved from {} to {}: waited {} ms for {} reservations, {} idempotency records and {} consumer states",
            self.slot,
            self.from,
            self.to,
            self.waited_ms,
            self.reservations,
            self.idempotency_records,
            self.consumer_checks
        )
    }
}

/// What the new home must hold before it may take the slot's writes.
struct Awaited {
    /// The slot as the old home froze it: capacity and reserved.
    slot: (u32, u32),
    /// Reservation item key to the version the old home holds.
    reservations: BTreeMap<String, u64>,
    idempotency: Vec<String>,
    /// The latest event of each reservation, decoded once, for the consumers.
    latest_events: Vec<ReservationEvent>,
}

/// Moves `slot`'s home from `from` to `to`, both running. Refuses, changing nothing, when the
/// slot is not at home in `from` or is moving elsewhere; changes nothing when it is at home in
/// `to` already. Leaves the slot moving (no Region writes it) when `patience` runs out: run it
/// again to go on, or [`abort_move`].
pub async fn move_home(
    from: &Replica,
    to: &Replica,
    slot_id: &SlotId,
    patience: Patience,
) -> Result<MoveReport, MoveError> {
    let started = Instant::now();
    let slot = slot_id.to_string();
    let (from_region, to_region) = (from.region().to_owned(), to.region().to_owned());
    if from_region == to_region {
        return Err(MoveError::SameRegion(from_region));
    }
    let report = |moved: bool, awaited: Option<&Awaited>, checks: usize| MoveReport {
        slot: slot.clone(),
        from: from_region.clone(),
        to: to_region.clone(),
        moved,
        reservations: awaited.map_or(0, |a| a.reservations.len()),
        idempotency_records: awaited.map_or(0, |a| a.idempotency.len()),
        consumer_checks: checks,
        waited_ms: started.elapsed().as_millis(),
    };

    // Where the slot stands, as its new home sees it: a finished move is done.
    if to.holds_home_of(slot_id).await? {
        return Ok(report(false, None, 0));
    }
    let Some(here) = from.slot(slot_id).await? else {
        return Err(MoveError::SlotNotFound {
            slot,
            region: from_region,
        });
    };
    match here.moving_to.as_deref() {
        Some(moving) if moving != to_region => {
            return Err(MoveError::MovingElsewhere {
                slot,
                to: moving.to_owned(),
            });
        }
        _ if from.home_of(&here) != from_region => {
            return Err(MoveError::NotHomeThere {
                slot,
                home: from.home_of(&here).to_owned(),
                from: from_region,
            });
        }
        Some(_) => {} // a move under way: go on
        None => begin(from, slot_id, &to_region).await?,
    }

    let awaited = awaited(from, slot_id).await?;
    let pending = pending_checks(&awaited, from, to);
    let checks = pending
        .iter()
        .filter(|check| matches!(check, Check::Consumer { .. }))
        .count();
    if let Some(waiting) = wait_until_held(pending, (from, to), slot_id, &awaited, started, patience).await? {
        return Err(MoveError::StillReplicating {
            slot,
            from: from_region,
            to: to_region,
            waited: started.elapsed(),
            waiting,
        });
    }
    finish(to, slot_id, &from_region).await?;
    Ok(report(true, Some(&awaited), checks))
}

/// Looks at `pending` every `patience.poll` until every check holds (`None`), or until
/// `patience.wait` has passed since `started`: then what it still waits for, the first three
/// named.
async fn wait_until_held(
    mut pending: Vec<Check>,
    (from, to): (&Replica, &Replica),
    slot_id: &SlotId,
    awaited: &Awaited,
    started: Instant,
    patience: Patience,
) -> Result<Option<String>, MoveError> {
    loop {
        let mut still = Vec::new();
        for check in pending {
            if !check.holds(from, to, slot_id, to.region(), awaited).await? {
                still.push(check);
            }
        }
        pending = still;
        if pending.is_empty() {
            return Ok(None);
        }
        if started.elapsed() >= patience.wait {
            let named = pending
                .iter()
                .take(3)
                .map(Check::describe)
                .collect::<Vec<_>>()
                .join(", ");
            let more = pending.len().saturating_sub(3);
            return Ok(Some(if more > 0 {
                format!("{named} and {more} more")
            } else {
                named
            }));
        }
        tokio::time::sleep(patience.poll).await;
    }
}

/// Sets `moving_to` in the old home, on the condition that the slot is at home there and not
/// moving: from this write on the old home refuses the slot's writes.
async fn begin(from: &Replica, slot_id: &SlotId, to: &str) -> Result<(), MoveError> {
    let home = SlotHome(from.regions.clone());
    let update = from
        .slot_update(slot_pk(slot_id))
        .update_expression("SET #moving_to = :to")
        .condition_expression(format!("attribute_exists(pk) AND {}", home.condition()))
        .expression_attribute_names("#home_region", HOME_REGION)
        .expression_attribute_names("#moving_to", MOVING_TO)
        .expression_attribute_values(":here", AttributeValue::S(from.region().to_owned()))
        .expression_attribute_values(":to", AttributeValue::S(to.to_owned()));
    if !from.conditionally("marking the slot moving", update).await? {
        return Err(MoveError::Raced {
            slot: slot_id.to_string(),
            found: "its home or move changed since it was read".into(),
        });
    }
    Ok(())
}

/// Names `to` the slot's home, in `to`'s replica, on the condition that the slot is still
/// moving there from `from`.
async fn finish(to: &Replica, slot_id: &SlotId, from: &str) -> Result<(), MoveError> {
    let home_was = if from == to.regions.primary {
        "(attribute_not_exists(#home_region) OR #home_region = :from)"
    } else {
        "#home_region = :from"
    };
    let update = to
        .slot_update(slot_pk(slot_id))
        .update_expression("SET #home_region = :to REMOVE #moving_to")
        .condition_expression(format!("#moving_to = :to AND {home_was}"))
        .expression_attribute_names("#home_region", HOME_REGION)
        .expression_attribute_names("#moving_to", MOVING_TO)
        .expression_attribute_values(":to", AttributeValue::S(to.region().to_owned()))
        .expression_attribute_values(":from", AttributeValue::S(from.to_owned()));
    if !to.conditionally("naming the new home", update).await? {
        return Err(MoveError::Raced {
            slot: slot_id.to_string(),
            found: format!("{} no longer shows it moving from {from}", to.region()),
        });
    }
    Ok(())
}

/// Ends a move that has not finished, keeping the slot at home in `from`. Refused when `to`
/// already shows the move finished. Run it only where no move of the slot is running.
pub async fn abort_move(from: &Replica, to: &Replica, slot_id: &SlotId) -> Result<(), MoveError> {
    let slot = slot_id.to_string();
    if to.holds_home_of(slot_id).await? {
        return Err(MoveError::AlreadyMoved {
            slot,
            to: to.region().to_owned(),
        });
    }
    let update = from
        .slot_update(slot_pk(slot_id))
        .update_expression("REMOVE #moving_to")
        .condition_expression("#moving_to = :to")
        .expression_attribute_names("#moving_to", MOVING_TO)
        .expression_attribute_values(":to", AttributeValue::S(to.region().to_owned()));
    if !from.conditionally("ending the move", update).await? {
        return Err(MoveError::NotMoving {
            slot,
            to: to.region().to_owned(),
        });
    }
    Ok(())
}

/// What the old home wrote for the slot, read once the slot is frozen there.
async fn awaited(from: &Replica, slot_id: &SlotId) -> Result<Awaited, MoveError> {
    let frozen = from.slot(slot_id).await?.ok_or_else(|| MoveError::SlotNotFound {
        slot: slot_id.to_string(),
        region: from.region().to_owned(),
    })?;
    let items = from
        .scan(
            &from.reservations_table,
            "(item_type = :reservation AND slot_id = :slot) OR item_type = :idempotency",
            &[
                (":reservation", AttributeValue::S("Reservation".into())),
                (":idempotency", AttributeValue::S("IdempotencyRecord".into())),
                (":slot", AttributeValue::S(slot_id.to_string())),
            ],
        )
        .await?;
    let mut reservations = BTreeMap::new();
    let mut idempotency = Vec::new();
    for item in items {
        let pk = item.get(PK).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
        if item.get("item_type").and_then(|t| t.as_s().ok()).map(String::as_str) == Some("Reservation") {
            let reservation: ReservationItem = serde_dynamo::aws_sdk_dynamodb_1::from_item(item)
                .map_err(|e| from.failed("reading a reservation", e))?;
            reservations.insert(pk, reservation.reservation.version.get());
        } else if answers_for_slot(&item, slot_id) {
            idempotency.push(pk);
        }
    }
    let mut latest_events = Vec::new();
    for (pk, version) in &reservations {
        let id = pk.trim_start_matches("RESERVATION#");
        let key = HashMap::from([
            (OUTBOX_PARTITION_KEY.to_owned(), AttributeValue::S(id.to_owned())),
            (OUTBOX_SORT_KEY.to_owned(), AttributeValue::N(version.to_string())),
        ]);
        // An event past the outbox's TTL is long applied; there is nothing to wait for.
        if let Some(item) = from.get(&from.outbox_table, key).await? {
            let outbox: OutboxItem = serde_dynamo::aws_sdk_dynamodb_1::from_item(item)
                .map_err(|e| from.failed("reading an outbox event", e))?;
            // An event no consumer can read is the dead letters' business, not the move's.
            latest_events.extend(reservation_event(&outbox.envelope));
        }
    }
    Ok(Awaited {
        slot: (frozen.capacity.get(), frozen.reserved),
        reservations,
        idempotency,
        latest_events,
    })
}

/// Whether an idempotency record answered a request for `slot_id`: its stored answer names it.
fn answers_for_slot(item: &Item, slot_id: &SlotId) -> bool {
    item.get("response_body")
        .and_then(|body| body.as_s().ok())
        .and_then(|body| serde_json::from_str::<serde_json::Value>(body).ok())
        .is_some_and(|body| body["slot_id"].as_str() == Some(slot_id.as_str()))
}

/// One thing the new home waits for.
enum Check {
    Slot,
    Reservation {
        pk: String,
        version: u64,
    },
    Idempotency {
        pk: String,
    },
    /// Consumer `index` of the `in_to` Region (else of the old home) holds event `event`'s version.
    Consumer {
        in_to: bool,
        index: usize,
        event: usize,
    },
}

fn pending_checks(awaited: &Awaited, from: &Replica, to: &Replica) -> Vec<Check> {
    let mut checks = vec![Check::Slot];
    checks.extend(awaited.reservations.iter().map(|(pk, version)| Check::Reservation {
        pk: pk.clone(),
        version: *version,
    }));
    checks.extend(
        awaited
            .idempotency
            .iter()
            .map(|pk| Check::Idempotency { pk: pk.clone() }),
    );
    for (in_to, replica) in [(false, from), (true, to)] {
        for index in 0..replica.consumers.len() {
            checks.extend((0..awaited.latest_events.len()).map(|event| Check::Consumer { in_to, index, event }));
        }
    }
    checks
}

impl Check {
    async fn holds(
        &self,
        from: &Replica,
        to: &Replica,
        slot_id: &SlotId,
        to_region: &str,
        awaited: &Awaited,
    ) -> Result<bool, MoveError> {
        Ok(match self {
            Self::Slot => to.slot(slot_id).await?.is_some_and(|slot| {
                slot.moving_to.as_deref() == Some(to_region) && (slot.capacity.get(), slot.reserved) == awaited.slot
            }),
            Self::Reservation { pk, version } => {
                let key = HashMap::from([(PK.to_owned(), AttributeValue::S(pk.clone()))]);
                to.get(&to.reservations_table, key)
                    .await?
                    .and_then(|item| {
                        item.get("version")
                            .and_then(|v| v.as_n().ok())
                            .and_then(|v| v.parse::<u64>().ok())
                    })
                    .is_some_and(|held| held >= *version)
            }
            Self::Idempotency { pk } => {
                let key = HashMap::from([(PK.to_owned(), AttributeValue::S(pk.clone()))]);
                to.get(&to.reservations_table, key).await?.is_some()
            }
            Self::Consumer { in_to, index, event } => {
                let replica = if *in_to { to } else { from };
                let event = &awaited.latest_events[*event];
                let applied = replica.consumers[*index]
                    .applied(event)
                    .await
                    .map_err(|e| replica.failed("reading a consumer's state", e))?;
                applied.is_some_and(|v| v >= event.version())
            }
        })
    }

    fn describe(&self) -> String {
        match self {
            Self::Slot => "the slot's moving state".into(),
            Self::Reservation { pk, version } => format!("{pk} v{version}"),
            Self::Idempotency { pk } => pk.clone(),
            Self::Consumer { in_to, index, .. } => format!(
                "consumer {} of the {} Region",
                index + 1,
                if *in_to { "new" } else { "old" }
            ),
        }
    }
}

fn is_condition_failure<E: aws_sdk_dynamodb::error::ProvideErrorMetadata, R>(
    err: &aws_sdk_dynamodb::error::SdkError<E, R>,
) -> bool {
    err.code() == Some("ConditionalCheckFailedException")
}

/// What a takeover did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TakeoverReport {
    pub lost: String,
    pub here: String,
    /// Events born in the lost Region that this Region's replica holds, put on this Region's bus.
    pub republished: usize,
    /// Their event ids, in the order they were put.
    #[serde(skip)]
    pub republished_ids: Vec<String>,
    pub undecodable: usize,
    /// Slots whose home this run took, and those it had taken before.
    pub slots_taken: usize,
    pub slots_taken_before: usize,
    /// Slots moving between the lost Region and a third one: left alone, named.
    pub slots_left: Vec<String>,
}

impl std::fmt::Display for TakeoverReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} took over from {}: republished {} events born there ({} undecodable), took the home of {} slots ({} taken before)",
            self.here, self.lost, self.republished, self.undecodable, self.slots_taken, self.slots_taken_before
        )?;
        if !self.slots_left.is_empty() {
            write!(
                f,
                "; left {} moving between {} and a third Region (finish or abort those there): {}",
                self.slots_left.len(),
                self.lost,
                self.slots_left.join(", ")
            )?;
        }
        Ok(())
    }
}

/// Takes over the slots of a lost Region: first puts on this Region's bus (`sink`) every event
/// born in `lost` that this Region's replica holds, each reservation's in order (consumers drop
/// the versions they have), then names this Region the home of every slot at home in `lost` or
/// moving between it and this one (marked `taken_over_from`). What the lost Region committed
/// and never replicated is not here and is not published: the audit names it once that
/// Region's writes arrive. Run again, it republishes (duplicates, dropped by consumers) and
/// takes what is left.
pub async fn take_over<S: EventSink>(
    lost: &str,
    here: &Replica,
    sink: &S,
    deadline: Instant,
) -> Result<TakeoverReport, MoveError> {
    if lost == here.region() {
        return Err(MoveError::TakeoverOfItself {
            region: lost.to_owned(),
        });
    }
    let mut report = TakeoverReport {
        lost: lost.to_owned(),
        here: here.region().to_owned(),
        ..Default::default()
    };

    let born_there = if lost == here.regions.primary {
        "item_type = :outbox AND (#born_in = :lost OR attribute_not_exists(#born_in))"
    } else {
        "item_type = :outbox AND #born_in = :lost"
    };
    let items = here
        .scan(
            &here.outbox_table,
            born_there,
            &[
                (":outbox", AttributeValue::S(domain::OUTBOX_ITEM_TYPE.into())),
                (":lost", AttributeValue::S(lost.to_owned())),
            ],
        )
        .await?;
    let mut envelopes = Vec::new();
    for item in items {
        match serde_dynamo::aws_sdk_dynamodb_1::from_item::<OutboxItem>(item) {
            Ok(outbox) => envelopes.push(outbox.envelope),
            Err(_) => report.undecodable += 1,
        }
    }
    envelopes.sort_by(|a, b| (a.aggregate_id.as_str(), a.version).cmp(&(b.aggregate_id.as_str(), b.version)));
    let records: Vec<SinkRecord> = envelopes
        .iter()
        .filter_map(|envelope| SinkRecord::of_envelope(envelope).ok())
        .collect();
    let published = publish_in_order(sink, &records, &PublishPolicy::default(), deadline).await;
    let accepted = published.published.iter().filter(|p| **p).count();
    if accepted < records.len() {
        return Err(MoveError::Republish {
            lost: lost.to_owned(),
            events: records.len(),
            published: accepted,
            error: published.last_error.unwrap_or_else(|| "out of time".into()),
        });
    }
    report.republished = records.len();
    report.republished_ids = envelopes.iter().map(|e| e.event_id.to_string()).collect();

    let slots = here
        .scan(
            &here.reservations_table,
            "item_type = :slot",
            &[(":slot", AttributeValue::S("Slot".into()))],
        )
        .await?;
    for item in slots {
        let slot: SlotItem =
            serde_dynamo::aws_sdk_dynamodb_1::from_item(item).map_err(|e| here.failed("reading a slot", e))?;
        let home = here.home_of(&slot).to_owned();
        let moving = slot.moving_to.clone();
        match takeover_of(&home, moving.as_deref(), here.region(), lost) {
            Takeover::Take => take_home(here, &slot, lost, &mut report).await?,
            Takeover::Leave => report.slots_left.push(slot.slot_id.to_string()),
            Takeover::Ours => {
                report.slots_taken_before += usize::from(slot.taken_over_from.as_deref() == Some(lost));
            }
            Takeover::NotConcerned => {}
        }
    }
    Ok(report)
}

/// What a takeover by `here` of the lost Region does with a slot at home in `home`, moving to
/// `moving`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Takeover {
    /// At home in the lost Region, or moving between it and this one: this Region's now.
    Take,
    /// Moving between the lost Region and a third: the third Region finishes or aborts it.
    Leave,
    /// At home here already.
    Ours,
    NotConcerned,
}

fn takeover_of(home: &str, moving: Option<&str>, here: &str, lost: &str) -> Takeover {
    match moving {
        None if home == here => Takeover::Ours,
        None if home == lost => Takeover::Take,
        Some(to) if (home == lost && to == here) || (home == here && to == lost) => Takeover::Take,
        Some(to) if home == lost || to == lost => Takeover::Leave,
        _ => Takeover::NotConcerned,
    }
}

/// Names this Region the home of `slot`, on the condition that its home and move are still as
/// read.
async fn take_home(here: &Replica, slot: &SlotItem, lost: &str, report: &mut TakeoverReport) -> Result<(), MoveError> {
    let mut request = here
        .slot_update(slot.pk.clone())
        .update_expression("SET #home_region = :here, taken_over_from = :lost REMOVE #moving_to")
        .expression_attribute_names("#home_region", HOME_REGION)
        .expression_attribute_names("#moving_to", MOVING_TO)
        .expression_attribute_values(":here", AttributeValue::S(here.region().to_owned()))
        .expression_attribute_values(":lost", AttributeValue::S(lost.to_owned()));
    let home_as_read = match &slot.home_region {
        Some(home) => {
            request = request.expression_attribute_values(":home", AttributeValue::S(home.clone()));
            "#home_region = :home"
        }
        None => "attribute_not_exists(#home_region)",
    };
    let moving_as_read = match &slot.moving_to {
        Some(moving) => {
            request = request.expression_attribute_values(":moving", AttributeValue::S(moving.clone()));
            "#moving_to = :moving"
        }
        None => "attribute_not_exists(#moving_to)",
    };
    let update = request.condition_expression(format!("{home_as_read} AND {moving_as_read}"));
    if !here.conditionally("taking a slot's home", update).await? {
        return Err(MoveError::Raced {
            slot: slot.slot_id.to_string(),
            found: "its home changed during the takeover".into(),
        });
    }
    report.slots_taken += 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_takeover_takes_the_lost_regions_slots_and_moves_with_it_and_leaves_a_third_regions() {
        let (here, lost, third) = ("eu-west-1", "us-east-1", "ap-south-1");
        for (home, moving, expected) in [
            (lost, None, Takeover::Take),
            (lost, Some(here), Takeover::Take),
            (here, Some(lost), Takeover::Take),
            (lost, Some(third), Takeover::Leave),
            (third, Some(lost), Takeover::Leave),
            (here, None, Takeover::Ours),
            (here, Some(third), Takeover::NotConcerned),
            (third, None, Takeover::NotConcerned),
            (third, Some(here), Takeover::NotConcerned),
        ] {
            assert_eq!(
                takeover_of(home, moving, here, lost),
                expected,
                "{home} moving to {moving:?}"
            );
        }
    }

    #[test]
    fn an_idempotency_record_belongs_to_the_slot_its_stored_answer_names() {
        let record = |body: &str| Item::from([("response_body".to_owned(), AttributeValue::S(body.to_owned()))]);
        let slot = SlotId::parse("dinner").unwrap();
        assert!(answers_for_slot(&record(r#"{"slot_id":"dinner","seats":2}"#), &slot));
        assert!(!answers_for_slot(&record(r#"{"slot_id":"lunch"}"#), &slot));
        assert!(!answers_for_slot(&record("not json"), &slot));
        assert!(!answers_for_slot(&Item::new(), &slot));
    }
}
