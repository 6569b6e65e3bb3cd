//! The consumers' tables. Each write is conditional on the reservation's last applied version, so
//! an event takes effect once and in order, however often and by however many consumers at once
//! it is delivered; a failed condition is read back as a duplicate or a gap.

use super::errors::{cancellation_kind, is_conditional_check_failure, store_error};
use super::{Item, built, deserialize, n, s, serialize};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::RequestId;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use domain::ports::{
    Delivery, GuestReservationsReader, NotificationChannel, NotificationSender, Page, PageRequest, ReadModelStore,
    StoreError, StoreErrorKind,
};
use domain::{
    ApplyOutcome, EventId, GuestId, GuestReservation, Notification, Reservation, ReservationId, Version, decide,
};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

/// Key attributes of the guest read model table.
pub const READ_MODEL_PARTITION_KEY: &str = "guest_id";
pub const READ_MODEL_SORT_KEY: &str = "reservation_id";

/// A guest reservation item: the reservation snapshot plus when and by which event it was written.
/// Reservation ids are ULIDs, so the sort key orders a guest's reservations by creation time.
#[derive(Debug, Serialize, Deserialize)]
struct GuestReservationItem {
    #[serde(flatten)]
    reservation: Reservation,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
    last_event_id: EventId,
}

/// The version stored in an item, if it has one.
fn stored_version(item: Option<&Item>) -> Option<Version> {
    item.and_then(|i| i.get("version"))
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .and_then(Version::new)
}

/// `version` is a DynamoDB reserved word, so it goes through a name placeholder.
fn version_condition(version: Version, key_attribute: &str) -> (String, Option<AttributeValue>) {
    match version.get() {
        1 => (format!("attribute_not_exists({key_attribute})"), None),
        v => ("#version = :previous".to_owned(), Some(n(v - 1))),
    }
}

#[derive(Debug, Clone)]
pub struct DynamoReadModel {
    client: Client,
    table: String,
}

impl DynamoReadModel {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

impl ReadModelStore for DynamoReadModel {
    async fn apply(&self, view: &GuestReservation) -> Result<ApplyOutcome, StoreError> {
        const OP: &str = "PutItem(guest reservation)";
        let item = serialize(
            OP,
            &GuestReservationItem {
                reservation: view.reservation.clone(),
                updated_at: view.updated_at,
                last_event_id: view.last_event_id.clone(),
            },
        )?;
        let version = view.reservation.version;
        let (condition, previous) = version_condition(version, READ_MODEL_SORT_KEY);
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if let Some(previous) = previous {
            request = request
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":previous", previous);
        }
        match request.send().await {
            Ok(_) => Ok(ApplyOutcome::Applied),
            Err(err) if is_conditional_check_failure(&err) => {
                let old = match err.as_service_error() {
                    Some(PutItemError::ConditionalCheckFailedException(e)) => e.item.clone(),
                    _ => None,
                };
                Ok(not_applied(stored_version(old.as_ref()), version))
            }
            Err(err) => Err(store_error(OP, err)),
        }
    }

    async fn applied_version(
        &self,
        guest_id: &GuestId,
        reservation_id: &ReservationId,
    ) -> Result<Option<Version>, StoreError> {
        const OP: &str = "GetItem(guest reservation)";
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(READ_MODEL_PARTITION_KEY, s(guest_id.as_str()))
            .key(READ_MODEL_SORT_KEY, s(reservation_id.as_str()))
            .projection_expression("#version")
            .expression_attribute_names("#version", "version")
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error(OP, e))?;
        Ok(stored_version(out.item.as_ref()))
    }
}

/// A write whose condition failed: the stored version says which of the two it was.
fn not_applied(stored: Option<Version>, incoming: Version) -> ApplyOutcome {
    match decide(stored, incoming) {
        // Only possible for version 1 without the failing item's image: the item exists, so
        // version 1 was applied.
        ApplyOutcome::Applied => ApplyOutcome::Duplicate,
        other => other,
    }
}

impl GuestReservationsReader for DynamoReadModel {
    async fn guest_reservations(
        &self,
        guest_id: &GuestId,
        page: &PageRequest,
    ) -> Result<Page<GuestReservation>, StoreError> {
        const OP: &str = "Query(guest reservations)";
        let limit = page.limit.max(1);
        let mut request = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#guest = :guest")
            .expression_attribute_names("#guest", READ_MODEL_PARTITION_KEY)
            .expression_attribute_values(":guest", s(guest_id.as_str()))
            .scan_index_forward(false)
            // One more than asked: tells whether there is a next page without an empty last one.
            .limit(limit as i32 + 1);
        if let Some(after) = &page.after {
            request = request
                .exclusive_start_key(READ_MODEL_PARTITION_KEY, s(guest_id.as_str()))
                .exclusive_start_key(READ_MODEL_SORT_KEY, s(after.as_str()));
        }
        let out = request.send().await.map_err(|e| store_error(OP, e))?;
        let mut items = out
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|item| {
                deserialize::<GuestReservationItem>(OP, item).map(|i| GuestReservation {
                    reservation: i.reservation,
                    updated_at: i.updated_at,
                    last_event_id: i.last_event_id,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let next_after = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|i| i.reservation.reservation_id.clone())
        } else {
            None
        };
        Ok(Page { items, next_after })
    }
}

/// The notifier's log in DynamoDB around a [`NotificationChannel`]: per reservation, the last
/// version notified (the progress item); per notification, what was sent and the channel's receipt
/// (TTL).
///
/// One notification is three steps (docs/adr/0005-notification-delivery.md):
/// 1. **claim**: the progress item is marked with the notification as pending, on condition that
///    its version is the reservation's next one; a failed condition is a duplicate or a gap and
///    nothing is published. The mark keeps when the first attempt was made.
/// 2. **publish** to the channel, which deduplicates by the notification id.
/// 3. **record**: the progress advances and the sent notification is stored, in one transaction.
///
/// A crash between 2 and 3 leaves the claim; the retry publishes again, which the channel absorbs
/// within its deduplication window. A retry later than that may deliver the notification twice:
/// it is counted ([`RepublishCounts`]), logged and, with metrics on, emitted as
/// `NotificationsRepublishedAfterDedupWindow`.
#[derive(Debug, Clone)]
pub struct DynamoNotifications<C> {
    client: Client,
    table: String,
    retention: Duration,
    channel: C,
    republished: std::sync::Arc<RepublishCounts>,
    metrics: telemetry::Emitter,
}

/// Publishes repeated because a notifier stopped between publishing and recording.
#[derive(Debug, Default)]
pub struct RepublishCounts {
    /// Repeats within the channel's deduplication window: absorbed by the channel.
    within_window: AtomicU64,
    /// Repeats after it: the channel may deliver the notification a second time.
    after_window: AtomicU64,
}

impl RepublishCounts {
    pub fn within_window(&self) -> u64 {
        self.within_window.load(Ordering::Relaxed)
    }

    pub fn after_window(&self) -> u64 {
        self.after_window.load(Ordering::Relaxed)
    }
}

/// The metric emitted for each repeat after the deduplication window (alarmed on in template.yaml).
pub const REPUBLISHED_AFTER_WINDOW_METRIC: &str = "NotificationsRepublishedAfterDedupWindow";

/// What the notifier emits for one repeat after the deduplication window.
pub fn republished_after_window_metrics() -> telemetry::MetricSet {
    let mut metrics = telemetry::metrics("notifier");
    metrics.count(REPUBLISHED_AFTER_WINDOW_METRIC, 1.0);
    metrics
}

pub fn notification_pk(notification_id: &EventId) -> String {
    format!("NOTIFICATION#{}", notification_id.as_str())
}

pub fn notifier_progress_pk(reservation_id: &ReservationId) -> String {
    format!("PROGRESS#{reservation_id}")
}

/// The progress item's mark of a notification claimed but not recorded yet.
const PENDING_EVENT: &str = "pending_event_id";
const PENDING_SINCE: &str = "pending_since";

#[derive(Debug, Serialize, Deserialize)]
struct NotificationItem {
    pk: String,
    item_type: String,
    notification_id: EventId,
    kind: String,
    guest_id: GuestId,
    reservation_id: ReservationId,
    version: Version,
    subject: String,
    body: String,
    trace_id: String,
    #[serde(with = "time::serde::rfc3339")]
    occurred_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    sent_at: OffsetDateTime,
    /// The channel's receipt.
    message_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sequence_number: Option<String>,
    /// TTL, epoch seconds.
    expires_at: i64,
}

/// What the claim found.
enum Claim {
    /// The notification is the reservation's next; `first_attempt` is set when an earlier attempt
    /// claimed it and did not record it (it may have published).
    Next {
        first_attempt: Option<OffsetDateTime>,
    },
    NotNext(ApplyOutcome),
}

impl<C> DynamoNotifications<C> {
    pub fn new(client: Client, table: impl Into<String>, retention: Duration, channel: C) -> Self {
        Self {
            client,
            table: table.into(),
            retention,
            channel,
            republished: Default::default(),
            metrics: telemetry::Emitter::Off,
        }
    }

    /// Emits a metric for each repeat after the deduplication window; off unless set.
    pub fn with_metrics(mut self, emitter: telemetry::Emitter) -> Self {
        self.metrics = emitter;
        self
    }

    pub fn channel(&self) -> &C {
        &self.channel
    }

    pub fn republished(&self) -> &RepublishCounts {
        &self.republished
    }

    /// Step 1: marks the notification pending if its version is the reservation's next.
    async fn claim(&self, notification: &Notification, now: OffsetDateTime) -> Result<Claim, StoreError> {
        const OP: &str = "UpdateItem(claim notification)";
        let (condition, previous) = progress_condition(notification.version);
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(notifier_progress_pk(&notification.reservation_id)))
            .update_expression(format!(
                "SET item_type = :progress, {PENDING_EVENT} = :event, \
                 {PENDING_SINCE} = if_not_exists({PENDING_SINCE}, :now)"
            ))
            .condition_expression(condition)
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":progress", s("NotifierProgress"))
            .expression_attribute_values(":event", s(notification.notification_id.as_str()))
            .expression_attribute_values(":now", s(rfc3339(OP, now)?))
            .return_values(ReturnValue::AllOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if let Some(previous) = previous {
            request = request.expression_attribute_values(":previous", previous);
        }
        match request.send().await {
            Ok(out) => {
                let old = out.attributes.unwrap_or_default();
                let pending_here = old.get(PENDING_EVENT).and_then(|v| v.as_s().ok()).map(String::as_str)
                    == Some(notification.notification_id.as_str());
                let first_attempt = old
                    .get(PENDING_SINCE)
                    .and_then(|v| v.as_s().ok())
                    .filter(|_| pending_here)
                    .and_then(|at| OffsetDateTime::parse(at, &Rfc3339).ok());
                Ok(Claim::Next { first_attempt })
            }
            Err(err) if is_conditional_check_failure(&err) => {
                let old = match err.as_service_error() {
                    Some(UpdateItemError::ConditionalCheckFailedException(e)) => e.item.clone(),
                    _ => None,
                };
                Ok(Claim::NotNext(not_applied(
                    stored_version(old.as_ref()),
                    notification.version,
                )))
            }
            Err(err) => Err(store_error(OP, err)),
        }
    }

    /// Drops this notification's claim (best effort: a claim left behind only makes a later
    /// publish count as a repeat).
    async fn release(&self, notification: &Notification) {
        let released = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(notifier_progress_pk(&notification.reservation_id)))
            .update_expression(format!("REMOVE {PENDING_EVENT}, {PENDING_SINCE}"))
            .condition_expression(format!("{PENDING_EVENT} = :event"))
            .expression_attribute_values(":event", s(notification.notification_id.as_str()))
            .send()
            .await;
        if let Err(err) = released {
            tracing::warn!(error = %store_error("UpdateItem(release claim)", err), "could not release the claim");
        }
    }

    /// Step 3: advances the progress and stores the sent notification, in one transaction.
    async fn record(
        &self,
        notification: &Notification,
        delivery: Delivery,
        now: OffsetDateTime,
    ) -> Result<ApplyOutcome, StoreError> {
        const OP: &str = "TransactWriteItems(record notification)";
        let item = serialize(
            OP,
            &NotificationItem {
                pk: notification_pk(&notification.notification_id),
                item_type: "Notification".into(),
                notification_id: notification.notification_id.clone(),
                kind: notification.kind.as_str().into(),
                guest_id: notification.guest_id.clone(),
                reservation_id: notification.reservation_id.clone(),
                version: notification.version,
                subject: notification.subject.clone(),
                body: notification.body.clone(),
                trace_id: notification.trace_id.to_string(),
                occurred_at: notification.occurred_at,
                sent_at: now,
                message_id: delivery.message_id,
                sequence_number: delivery.sequence_number,
                expires_at: (now + self.retention).unix_timestamp(),
            },
        )?;
        let (condition, previous) = progress_condition(notification.version);
        let mut progress = Update::builder()
            .table_name(&self.table)
            .key("pk", s(notifier_progress_pk(&notification.reservation_id)))
            .update_expression(format!(
                "SET #version = :version, item_type = :progress REMOVE {PENDING_EVENT}, {PENDING_SINCE}"
            ))
            .condition_expression(condition)
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":version", n(notification.version.get()))
            .expression_attribute_values(":progress", s("NotifierProgress"))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if let Some(previous) = previous {
            progress = progress.expression_attribute_values(":previous", previous);
        }
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)");
        let items = vec![
            TransactWriteItem::builder()
                .update(built(OP, progress.build())?)
                .build(),
            TransactWriteItem::builder().put(built(OP, put.build())?).build(),
        ];
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            // No ClientRequestToken: a repeat within its 10 minutes would report success for what
            // is a duplicate. The conditions alone keep it to one record, and name the repeat.
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(ApplyOutcome::Applied),
            Err(err) => err,
        };
        if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) = err.as_service_error() {
            let reasons = cancelled.cancellation_reasons();
            let code = |i: usize| reasons.get(i).and_then(|r| r.code()).unwrap_or("None");
            // Another notifier recorded it first (its publish had the same deduplication id).
            if code(0) == "ConditionalCheckFailed" {
                let stored = stored_version(reasons[0].item());
                return Ok(not_applied(stored, notification.version));
            }
            if code(1) == "ConditionalCheckFailed" {
                // Recorded already under this id (progress was reset by hand, or a replay of it).
                return Ok(ApplyOutcome::Duplicate);
            }
        }
        let kind = match err.as_service_error() {
            Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => cancellation_kind(
                cancelled
                    .cancellation_reasons()
                    .iter()
                    .map(|r| r.code().unwrap_or("None")),
            ),
            Some(TransactWriteItemsError::TransactionInProgressException(_)) => StoreErrorKind::Contended,
            _ => StoreErrorKind::Other,
        };
        let request_id = err.request_id().map(str::to_owned);
        Err(StoreError::new(kind, OP, err).with_request_id(request_id))
    }

    /// A repeated publish: within the channel's window it is absorbed; after it, it is counted and
    /// reported, since the channel may deliver it again.
    fn count_republish(&self, notification: &Notification, first_attempt: OffsetDateTime, window: Duration) {
        let since = OffsetDateTime::now_utc() - first_attempt;
        if since <= window {
            self.republished.within_window.fetch_add(1, Ordering::Relaxed);
            tracing::info!(first_attempt = %first_attempt, "publishing again within the channel's deduplication window");
            return;
        }
        self.republished.after_window.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            notification_id = %notification.notification_id.as_str(),
            reservation_id = %notification.reservation_id,
            version = %notification.version,
            first_attempt = %first_attempt,
            seconds_since = since.whole_seconds(),
            "publishing again after the channel's deduplication window: subscribers may receive this \
             notification twice (same notification_id)"
        );
        self.metrics.emit(&republished_after_window_metrics());
    }
}

fn rfc3339(operation: &'static str, at: OffsetDateTime) -> Result<String, StoreError> {
    at.format(&Rfc3339)
        .map_err(|e| StoreError::new(StoreErrorKind::Other, operation, e))
}

/// The progress item's version must be the one before `version`; for version 1 it has none (the
/// item may exist, holding a claim).
fn progress_condition(version: Version) -> (String, Option<AttributeValue>) {
    match version.get() {
        1 => ("attribute_not_exists(#version)".to_owned(), None),
        v => ("#version = :previous".to_owned(), Some(n(v - 1))),
    }
}

impl<C: NotificationChannel> NotificationSender for DynamoNotifications<C> {
    async fn send_once(&self, notification: &Notification) -> Result<ApplyOutcome, StoreError> {
        let first_attempt = match self.claim(notification, OffsetDateTime::now_utc()).await? {
            Claim::NotNext(outcome) => return Ok(outcome),
            Claim::Next { first_attempt } => first_attempt,
        };
        if let Some(first_attempt) = first_attempt {
            self.count_republish(notification, first_attempt, self.channel.dedup_window());
        }
        let delivery = match self.channel.publish(notification).await {
            Ok(delivery) => delivery,
            Err(refused) if refused.kind == StoreErrorKind::Rejected => {
                // Certainly not published: a re-drive after the fix is a first publish.
                self.release(notification).await;
                return Err(refused);
            }
            Err(other) => return Err(other),
        };
        self.record(notification, delivery, OffsetDateTime::now_utc()).await
    }

    async fn notified_version(&self, reservation_id: &ReservationId) -> Result<Option<Version>, StoreError> {
        const OP: &str = "GetItem(notifier progress)";
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(notifier_progress_pk(reservation_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error(OP, e))?;
        Ok(stored_version(out.item.as_ref()))
    }
}
