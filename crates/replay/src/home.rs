//! Moving a slot's home between Regions (docs/multi-region.md, "Moving a slot's home"): a planned
//! move between two Regions that both run ([`move_home`], [`abort_move`]), and the takeover of a
//! lost Region's slots by a Region that runs ([`take_over`]).
//!
//! A planned move goes through a state in which no Region writes the slot (`moving_to` on the
//! slot item, answered 503 `home_moving`), waits until the new home's replica holds everything
//! the old home wrote for the slot and both Regions' consumers hold its reservations' latest
//! versions, and only then names the new home, in the old home's replica where the freeze was
//! written, so that a move's finish and its abort exclude each other. Every change of a slot's
//! home goes through [`adapters::SlotHomes`], which owns the slot item's layout with the store.
//! Every step can be run again: a move that stopped half-way goes on from where it stands.
//!
//! A takeover is claimed once, in the replica of the Region every Region names alike
//! ([`arbiter_of`]), so that one Region alone takes a lost Region's slots.

use crate::audit::{AppliedVersions, reservation_event};
use adapters::SlotHomes;
use adapters::dynamodb::items::SlotItem;
use domain::SlotId;
use domain::ports::StoreError;
use relay::{EventSink, PublishPolicy, SinkRecord, publish_in_order};
use reservation_events_consumer::ReservationEvent;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// One Region of the deployment as a move sees it: its replica of the global tables and its
/// consumers' state (their tables replicated too, so either Region's consumers see the other's).
pub struct Replica {
    /// The slots' homes and what was written for them, in this Region's replica.
    pub homes: SlotHomes,
    /// The consumers whose state a move waits for; empty waits for none.
    pub consumers: Vec<Box<dyn AppliedVersions>>,
}

impl Replica {
    fn region(&self) -> &str {
        &self.homes.regions().here
    }

    fn home_of<'a>(&'a self, slot: &'a SlotItem) -> &'a str {
        self.homes.home_of(slot)
    }

    async fn slot(&self, slot_id: &SlotId) -> Result<Option<SlotItem>, MoveError> {
        self.homes
            .slot(slot_id)
            .await
            .map_err(|e| self.failed("reading the slot", e))
    }

    /// Every inventory item of the slot in this replica (its shards, the slot item first).
    async fn shards(&self, slot_id: &SlotId) -> Result<Option<Vec<SlotItem>>, MoveError> {
        self.homes
            .slot_shards(slot_id)
            .await
            .map_err(|e| self.failed("reading the slot's shards", e))
    }

    /// Whether this replica shows the slot, every shard of it, at home here and not moving: a
    /// move to here finished.
    async fn holds_home_of(&self, slot_id: &SlotId) -> Result<bool, MoveError> {
        let Some(shards) = self.shards(slot_id).await? else {
            return Ok(false);
        };
        Ok(shards.len() == usize::from(shards[0].shard_count().get())
            && shards
                .iter()
                .all(|shard| shard.moving_to.is_none() && self.home_of(shard) == self.region()))
    }

    fn failed(&self, what: &'static str, source: impl std::error::Error + Send + Sync + 'static) -> MoveError {
        MoveError::Store {
            what,
            region: self.region().to_owned(),
            source: Box::new(source),
        }
    }
}

/// A store call of `replica`, its failure named by `what`.
async fn store<T>(
    replica: &Replica,
    what: &'static str,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, MoveError> {
    call.await.map_err(|e| replica.failed(what, e))
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
        "the takeover of {lost} is {heir}'s: it claimed it at {claimed_at}, and one Region alone takes a lost Region's \
         slots; run the takeover in {heir} (running it again there goes on)"
    )]
    TakenOverBy {
        lost: String,
        heir: String,
        claimed_at: String,
    },
    #[error(
        "the takeover of {lost} is decided in {arbiter} (the first of the deployment's other Regions in \
         alphabetical order), which this command was not given: name it with --region {arbiter}"
    )]
    ArbiterNotGiven { lost: String, arbiter: String },
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
    /// Whether `to`'s replica showed the finished move before the command returned (it takes
    /// the slot's writes from then on).
    pub new_home_took_over: bool,
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
        )?;
        if !self.new_home_took_over {
            write!(
                f,
                "; {} takes its writes as soon as its replica shows the move",
                self.to
            )?;
        }
        Ok(())
    }
}

/// What the new home must hold before it may take the slot's writes.
struct Awaited {
    /// The slot as the old home froze it: each shard's key, capacity and reserved (one for a
    /// slot of one shard).
    slot: Vec<(String, u32, u32)>,
    /// Reservation item key to the version the old home holds.
    reservations: BTreeMap<String, u64>,
    idempotency: Vec<String>,
    /// The latest event of each reservation, decoded once, for the consumers.
    latest_events: Vec<ReservationEvent>,
}

/// Moves `slot`'s home from `from` to `to`, both running. Refuses, changing nothing, when the
/// slot is not at home in `from` or is moving elsewhere; changes nothing when it is at home in
/// `to` already. Leaves the slot moving (no Region writes it) when `patience` runs out: run it
/// again to go on, or [`abort_move`]. Every change of the slot is written in `from`, its home
/// until the move ends, so a move and its abort exclude each other.
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
    let report = |moved: bool, awaited: Option<&Awaited>, checks: usize, took_over: bool| MoveReport {
        slot: slot.clone(),
        from: from_region.clone(),
        to: to_region.clone(),
        moved,
        reservations: awaited.map_or(0, |a| a.reservations.len()),
        idempotency_records: awaited.map_or(0, |a| a.idempotency.len()),
        consumer_checks: checks,
        waited_ms: started.elapsed().as_millis(),
        new_home_took_over: took_over,
    };

    // Where the slot stands: a finished move (seen in the new home, or decided in the old one
    // and on its way) is done.
    if to.holds_home_of(slot_id).await? {
        return Ok(report(false, None, 0, true));
    }
    let Some(here) = from.slot(slot_id).await? else {
        return Err(MoveError::SlotNotFound {
            slot,
            region: from_region,
        });
    };
    match here.moving_to.as_deref() {
        None if from.home_of(&here) == to_region => {
            let arrived = wait_for_new_home(to, slot_id, started, patience).await?;
            return Ok(report(false, None, 0, arrived));
        }
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
        None => {
            if !store(
                from,
                "marking the slot moving",
                from.homes.begin_move(slot_id, &to_region),
            )
            .await?
            {
                return Err(MoveError::Raced {
                    slot,
                    found: "its home or move changed since it was read".into(),
                });
            }
        }
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
    // Named in the old home, where the freeze was written: an abort racing this write finds the
    // move finished, or this write finds it aborted, never both.
    if !store(from, "naming the new home", from.homes.finish_move(slot_id, &to_region)).await? {
        return Err(MoveError::Raced {
            slot,
            found: format!("{from_region} no longer shows it moving to {to_region} (was the move aborted?)"),
        });
    }
    let arrived = wait_for_new_home(to, slot_id, started, patience).await?;
    Ok(report(true, Some(&awaited), checks, arrived))
}

/// Waits, within `patience`, until `to`'s replica shows the slot at home there: whether it did.
async fn wait_for_new_home(
    to: &Replica,
    slot_id: &SlotId,
    started: Instant,
    patience: Patience,
) -> Result<bool, MoveError> {
    loop {
        if to.holds_home_of(slot_id).await? {
            return Ok(true);
        }
        if started.elapsed() >= patience.wait {
            return Ok(false);
        }
        tokio::time::sleep(patience.poll).await;
    }
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

/// Ends a move that has not finished, keeping the slot at home in `from`: written in `from`, on
/// the condition that it is still moving to `to` there, so it excludes the move's own finish.
/// Refused when the move finished (`from` names `to` its home).
pub async fn abort_move(from: &Replica, to: &Replica, slot_id: &SlotId) -> Result<(), MoveError> {
    let slot = slot_id.to_string();
    let to_region = to.region().to_owned();
    if store(from, "ending the move", from.homes.abort_move(slot_id, &to_region)).await? {
        return Ok(());
    }
    let finished = from
        .slot(slot_id)
        .await?
        .is_some_and(|item| item.moving_to.is_none() && from.home_of(&item) == to_region);
    Err(if finished {
        MoveError::AlreadyMoved { slot, to: to_region }
    } else {
        MoveError::NotMoving { slot, to: to_region }
    })
}

/// What the old home wrote for the slot, read consistently once the slot is frozen there.
async fn awaited(from: &Replica, slot_id: &SlotId) -> Result<Awaited, MoveError> {
    let frozen = from.shards(slot_id).await?.ok_or_else(|| MoveError::SlotNotFound {
        slot: slot_id.to_string(),
        region: from.region().to_owned(),
    })?;
    let written = store(
        from,
        "reading what was written for the slot",
        from.homes.written_for_slot(slot_id),
    )
    .await?;
    let mut latest_events = Vec::new();
    for (pk, version) in &written.reservations {
        let id = pk.trim_start_matches("RESERVATION#");
        // An event past the outbox's TTL is long applied; there is nothing to wait for.
        if let Some(outbox) = store(from, "reading an outbox event", from.homes.event(id, *version)).await? {
            // An event no consumer can read is the dead letters' business, not the move's.
            latest_events.extend(reservation_event(&outbox.envelope));
        }
    }
    Ok(Awaited {
        slot: frozen
            .iter()
            .map(|shard| (shard.pk.clone(), shard.capacity.get(), shard.reserved))
            .collect(),
        reservations: written.reservations,
        idempotency: written.idempotency_records,
        latest_events,
    })
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
            // Every shard, each frozen with the figures the old home froze it with: the shards
            // replicate one by one, in no promised order.
            Self::Slot => to.shards(slot_id).await?.is_some_and(|shards| {
                shards.iter().all(|shard| shard.moving_to.as_deref() == Some(to_region))
                    && shards
                        .iter()
                        .map(|shard| (shard.pk.clone(), shard.capacity.get(), shard.reserved))
                        .collect::<Vec<_>>()
                        == awaited.slot
            }),
            Self::Reservation { pk, version } => {
                store(to, "reading a reservation", to.homes.holds_reservation(pk, *version)).await?
            }
            Self::Idempotency { pk } => store(to, "reading an idempotency record", to.homes.holds(pk)).await?,
            Self::Consumer { in_to, index, event } => {
                let replica = if *in_to { to } else { from };
                let event = &awaited.latest_events[*event];
                let applied = replica.consumers[*index]
                    .applied(event)
                    .await
                    .map_err(|e| replica.failed("reading a consumer's state", e))?;
                applied.is_some_and(|v| v >= event.version)
            }
        })
    }

    fn describe(&self) -> String {
        match self {
            Self::Slot => "the slot's moving state (every shard)".into(),
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

/// What a takeover did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TakeoverReport {
    pub lost: String,
    pub here: String,
    /// Events born in the lost Region that the running Regions' replicas hold, put on this
    /// Region's bus.
    pub republished: usize,
    /// Their event ids, in the order they were put.
    #[serde(skip)]
    pub republished_ids: Vec<String>,
    pub undecodable: usize,
    /// Slots of the lost Region whose home this run took (some held only by another running
    /// Region's replica, copied here), and those it had taken before.
    pub slots_taken: usize,
    pub slots_taken_before: usize,
    /// Slots of the lost Region moving to another running Region: that Region is their home now,
    /// decided in its replica.
    pub slots_given_to_their_move: usize,
    /// Moves from a running Region to the lost one, aborted in that Region (the slot stays there).
    pub moves_to_lost_aborted: usize,
    /// Slots this command could not resolve: their home is a Region it was not given.
    pub slots_left: Vec<String>,
}

impl std::fmt::Display for TakeoverReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} took over from {}: republished {} events born there ({} undecodable), took the home of {} slots ({} taken before), gave {} to the Region they were moving to, aborted {} moves to {}",
            self.here,
            self.lost,
            self.republished,
            self.undecodable,
            self.slots_taken,
            self.slots_taken_before,
            self.slots_given_to_their_move,
            self.moves_to_lost_aborted,
            self.lost
        )?;
        if !self.slots_left.is_empty() {
            write!(
                f,
                "; left {} at home in Regions not given with --region (run again with them): {}",
                self.slots_left.len(),
                self.slots_left.join(", ")
            )?;
        }
        Ok(())
    }
}

/// The Region whose replica decides who takes over `lost`: the first of the deployment's other
/// Regions in alphabetical order. Every Region computes the same one from the same deployment
/// (the global table's replicas), whatever it calls its primary, so two takeovers meet in one
/// replica.
pub fn arbiter_of<'a>(lost: &str, deployment: &'a [String]) -> Option<&'a str> {
    deployment
        .iter()
        .map(String::as_str)
        .filter(|region| *region != lost)
        .min()
}

/// The Regions a takeover works with: the one taking over, the other Regions that run, and the
/// deployment's Regions (for the arbiter).
pub struct TakeoverRegions<'a> {
    pub here: &'a Replica,
    /// Every other running Region of the deployment the command can reach.
    pub others: &'a [&'a Replica],
    /// Every Region of the deployment, the lost one included.
    pub deployment: &'a [String],
}

/// Takes over the slots of a lost Region, in `regions.here`:
/// 1. claims the takeover in the arbiter's replica ([`arbiter_of`]): refused, changing nothing,
///    when another Region claimed it (one heir per lost Region, however many run the command);
/// 2. puts on this Region's bus every event born in `lost` that a running Region's replica holds,
///    each reservation's in order (consumers drop the versions they have);
/// 3. resolves every slot concerning `lost`, each decided where it is decided ([`decide`]): a
///    move of a running Region's slot to `lost` is aborted in that Region; a slot of `lost`
///    moving to a running Region becomes that Region's, written in its replica (a finish `lost`
///    wrote may be on its way there); every other slot of `lost` becomes this Region's, marked
///    `taken_over_from`, on the condition that it is still as read.
///
/// What the lost Region committed and never replicated is not here and is not published: the
/// audit names it once that Region's writes arrive. Run again (by the heir), it republishes
/// (duplicates, dropped by consumers) and takes what is left.
pub async fn take_over<S: EventSink>(
    lost: &str,
    regions: TakeoverRegions<'_>,
    sink: &S,
    deadline: Instant,
) -> Result<TakeoverReport, MoveError> {
    let here = regions.here;
    if lost == here.region() {
        return Err(MoveError::TakeoverOfItself {
            region: lost.to_owned(),
        });
    }
    let running: Vec<&Replica> = std::iter::once(here).chain(regions.others.iter().copied()).collect();
    let arbiter_region = arbiter_of(lost, regions.deployment).unwrap_or(here.region()).to_owned();
    let Some(arbiter) = running.iter().find(|r| r.region() == arbiter_region) else {
        return Err(MoveError::ArbiterNotGiven {
            lost: lost.to_owned(),
            arbiter: arbiter_region,
        });
    };
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let claim = store(
        arbiter,
        "claiming the takeover",
        arbiter.homes.claim_takeover(lost, here.region(), &now),
    )
    .await?;
    if claim.heir != here.region() {
        return Err(MoveError::TakenOverBy {
            lost: lost.to_owned(),
            heir: claim.heir,
            claimed_at: claim.claimed_at,
        });
    }
    let mut report = TakeoverReport {
        lost: lost.to_owned(),
        here: here.region().to_owned(),
        ..Default::default()
    };

    // Every event born in the lost Region that a running Region holds: each write replicates
    // from the Region it was made in only, so another survivor may hold what this one lacks.
    let mut events: BTreeMap<String, domain::EventEnvelope> = BTreeMap::new();
    for replica in &running {
        let (envelopes, undecodable) = store(
            replica,
            "reading the lost Region's events",
            replica.homes.events_born_in(lost),
        )
        .await?;
        if replica.region() == here.region() {
            report.undecodable = undecodable;
        }
        for envelope in envelopes {
            events.entry(envelope.event_id.to_string()).or_insert(envelope);
        }
    }
    let mut envelopes: Vec<domain::EventEnvelope> = events.into_values().collect();
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

    // Every running Region's view of every slot.
    let mut views: BTreeMap<String, Vec<(usize, SlotItem)>> = BTreeMap::new();
    for (index, replica) in running.iter().enumerate() {
        for slot in store(replica, "reading the slots", replica.homes.slots()).await? {
            views.entry(slot.pk.clone()).or_default().push((index, slot));
        }
    }
    let names: Vec<&str> = running.iter().map(|r| r.region()).collect();
    for seen in views.values() {
        let as_seen: Vec<(&str, Option<&str>, Option<&str>)> = seen
            .iter()
            .map(|(index, slot)| {
                (
                    names[*index],
                    Some(running[*index].home_of(slot)),
                    slot.moving_to.as_deref(),
                )
            })
            .collect();
        let slot_id = seen[0].1.slot_id.to_string();
        match decide(&as_seen, lost, here.region(), &names) {
            Decision::AbortIn(region) => {
                let replica = running[names.iter().position(|n| *n == region).expect("a running Region")];
                if !store(
                    replica,
                    "ending a move to the lost Region",
                    replica.homes.abort_move(&seen[0].1.slot_id, lost),
                )
                .await?
                {
                    return Err(MoveError::Raced {
                        slot: slot_id,
                        found: format!("{region} no longer shows it moving to {lost}; run the takeover again"),
                    });
                }
                report.moves_to_lost_aborted += 1;
            }
            Decision::TakeIn(region) => {
                let index = names.iter().position(|n| *n == region).expect("a running Region");
                // The slot as the taking Region's replica holds it, else as the first that does.
                let (holder, view) = match seen.iter().find(|(i, _)| *i == index) {
                    Some((_, slot)) => (index, slot),
                    None => (seen[0].0, &seen[0].1),
                };
                take_home(running[index], running[holder], view, lost).await?;
                if region == here.region() {
                    report.slots_taken += 1;
                } else {
                    report.slots_given_to_their_move += 1;
                }
            }
            Decision::Ours => {
                report.slots_taken_before += usize::from(
                    seen.iter()
                        .any(|(index, slot)| *index == 0 && slot.taken_over_from.as_deref() == Some(lost)),
                );
            }
            Decision::Left => report.slots_left.push(slot_id),
            Decision::NotConcerned => {}
        }
    }
    Ok(report)
}

/// Releases the claim on `lost` that `regions.here` holds, once the lost Region is back and
/// takes writes again, so that a later loss of it can be taken over anew. False when there was
/// no claim; refused when another Region holds it.
pub async fn release_takeover(lost: &str, regions: TakeoverRegions<'_>) -> Result<bool, MoveError> {
    let here = regions.here;
    let running: Vec<&Replica> = std::iter::once(here).chain(regions.others.iter().copied()).collect();
    let arbiter_region = arbiter_of(lost, regions.deployment).unwrap_or(here.region()).to_owned();
    let Some(arbiter) = running.iter().find(|r| r.region() == arbiter_region) else {
        return Err(MoveError::ArbiterNotGiven {
            lost: lost.to_owned(),
            arbiter: arbiter_region,
        });
    };
    match store(
        arbiter,
        "reading the takeover claim",
        arbiter.homes.takeover_claim(lost),
    )
    .await?
    {
        None => Ok(false),
        Some(claim) if claim.heir != here.region() => Err(MoveError::TakenOverBy {
            lost: lost.to_owned(),
            heir: claim.heir,
            claimed_at: claim.claimed_at,
        }),
        Some(_) => {
            store(
                arbiter,
                "releasing the takeover claim",
                arbiter.homes.release_takeover(lost, here.region()),
            )
            .await
        }
    }
}

/// What a takeover does with one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision<'a> {
    /// At home in this running Region and moving to the lost one: that Region aborts the move.
    AbortIn(&'a str),
    /// The lost Region's: this running Region takes it, in its replica.
    TakeIn(&'a str),
    /// At home here already, not moving.
    Ours,
    /// Concerns the lost Region, but its home is a Region the command was not given.
    Left,
    NotConcerned,
}

/// Decides what a takeover by `here` of `lost` does with a slot, from every running Region's view
/// of it: (Region of the replica, the home it names, where it is moving). The Region that sees
/// itself as the slot's home decides it: it is the slot's only writer. When none does, the slot
/// is the lost Region's: a move of it to a running Region is decided in that Region (a finish
/// the lost Region wrote may be on its way there), and anything else in `here`.
fn decide<'a>(
    views: &[(&'a str, Option<&'a str>, Option<&'a str>)],
    lost: &str,
    here: &'a str,
    running: &[&'a str],
) -> Decision<'a> {
    if let Some((region, _, moving)) = views.iter().find(|(region, home, _)| *home == Some(*region)) {
        return match *moving {
            Some(to) if to == lost => Decision::AbortIn(region),
            None if *region == here => Decision::Ours,
            _ => Decision::NotConcerned,
        };
    }
    let of_the_lost: Vec<_> = views.iter().filter(|(_, home, _)| *home == Some(lost)).collect();
    if let Some(to) = of_the_lost
        .iter()
        .filter_map(|(_, _, moving)| *moving)
        .find_map(|to| running.iter().find(|r| **r == to))
    {
        return Decision::TakeIn(to);
    }
    if !of_the_lost.is_empty() {
        return Decision::TakeIn(here);
    }
    if views.iter().any(|(_, _, moving)| *moving == Some(lost)) {
        return Decision::Left;
    }
    Decision::NotConcerned
}

/// Names the Region of `into` the home of `slot`, every shard of it as `holder`'s replica holds
/// them (`into`'s own, or another one's to copy), on the condition that each is still as read
/// there.
async fn take_home(into: &Replica, holder: &Replica, slot: &SlotItem, lost: &str) -> Result<(), MoveError> {
    let held = std::ptr::eq(into, holder);
    let shards = holder
        .shards(&slot.slot_id)
        .await?
        .unwrap_or_else(|| vec![slot.clone()]);
    if !store(into, "taking a slot's home", into.homes.take_home(&shards, lost, held)).await? {
        return Err(MoveError::Raced {
            slot: slot.slot_id.to_string(),
            found: format!(
                "its home changed in {} during the takeover; run the takeover again",
                into.region()
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_slot_is_decided_by_the_running_region_that_is_its_home_else_by_its_moves_destination_else_here() {
        let (here, lost, third) = ("eu-west-1", "us-east-1", "ap-south-1");
        let running = [here, third];
        let view = |region, home, moving| (region, Some(home), moving);
        for (views, expected) in [
            // The lost Region's slot, seen alike by both survivors.
            (
                vec![view(here, lost, None), view(third, lost, None)],
                Decision::TakeIn(here),
            ),
            // Moving from the lost Region to a survivor: decided there, whoever sees the move.
            (
                vec![view(here, lost, Some(third)), view(third, lost, None)],
                Decision::TakeIn(third),
            ),
            (vec![view(here, lost, Some(here))], Decision::TakeIn(here)),
            // The lost Region finished its move to the third Region, which has heard: the third's.
            (
                vec![view(here, lost, Some(third)), view(third, third, None)],
                Decision::NotConcerned,
            ),
            // A survivor's slot moving to the lost Region: its home aborts the move.
            (
                vec![view(here, third, Some(lost)), view(third, third, Some(lost))],
                Decision::AbortIn(third),
            ),
            (vec![view(here, here, Some(lost))], Decision::AbortIn(here)),
            // The third Region finished its move to the lost one; the heir has not heard: the
            // lost Region's, so the heir's.
            (
                vec![view(here, third, Some(lost)), view(third, lost, None)],
                Decision::TakeIn(here),
            ),
            // Moving to the lost Region from a Region not given: left, named.
            (vec![view(here, "sa-east-1", Some(lost))], Decision::Left),
            (vec![view(here, here, None)], Decision::Ours),
            (
                vec![view(here, third, None), view(third, third, None)],
                Decision::NotConcerned,
            ),
        ] {
            assert_eq!(decide(&views, lost, here, &running), expected, "{views:?}");
        }
    }

    #[test]
    fn every_region_names_the_same_arbiter_for_a_lost_region_whatever_it_calls_its_primary() {
        let deployment: Vec<String> = ["us-east-1", "eu-west-1", "ap-south-1"].map(String::from).to_vec();
        assert_eq!(arbiter_of("eu-west-1", &deployment), Some("ap-south-1"));
        assert_eq!(arbiter_of("ap-south-1", &deployment), Some("eu-west-1"));
        let reversed: Vec<String> = deployment.iter().rev().cloned().collect();
        assert_eq!(arbiter_of("us-east-1", &reversed), Some("ap-south-1"));
        assert_eq!(arbiter_of("us-east-1", &["us-east-1".into()]), None);
    }
}
