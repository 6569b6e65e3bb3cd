//! The consumers' tables. Each write is conditional on the reservation's last applied version, so
//! an event takes effect once and in order, however often and by however many consumers at once
//! it is delivered; a failed condition is read back as a duplicate or a gap.

use super::errors::{is_conditional_check_failure, store_error};
use super::{Item, built, deserialize, n, s, serialize};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::RequestId;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update};
use domain::ports::{
    GuestReservationsReader, NotificationSender, Page, PageRequest, ReadModelStore, StoreError, StoreErrorKind,
};
use domain::{
    ApplyOutcome, EventId, GuestId, GuestReservation, Notification, Reservation, ReservationId, Version, decide,
};
use serde::{Deserialize, Serialize};
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

/// The default notification channel: a table of sent notifications (TTL) and, per reservation,
/// the last version notified, written together in one transaction.
#[derive(Debug, Clone)]
pub struct DynamoNotifications {
    client: Client,
    table: String,
    retention: Duration,
}

pub fn notification_pk(notification_id: &EventId) -> String {
    format!("NOTIFICATION#{}", notification_id.as_str())
}

pub fn notifier_progress_pk(reservation_id: &ReservationId) -> String {
    format!("PROGRESS#{reservation_id}")
}

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
    /// TTL, epoch seconds.
    expires_at: i64,
}

impl DynamoNotifications {
    pub fn new(client: Client, table: impl Into<String>, retention: Duration) -> Self {
        Self {
            client,
            table: table.into(),
            retention,
        }
    }
}

impl NotificationSender for DynamoNotifications {
    async fn send_once(&self, notification: &Notification) -> Result<ApplyOutcome, StoreError> {
        const OP: &str = "TransactWriteItems(notification)";
        let now = OffsetDateTime::now_utc();
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
                expires_at: (now + self.retention).unix_timestamp(),
            },
        )?;
        let (condition, previous) = version_condition(notification.version, "pk");
        let mut progress = Update::builder()
            .table_name(&self.table)
            .key("pk", s(notifier_progress_pk(&notification.reservation_id)))
            .update_expression("SET #version = :version, item_type = :progress")
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
            // is a duplicate. The conditions alone keep it to one send, and name the repeat.
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(ApplyOutcome::Applied),
            Err(err) => err,
        };
        if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) = err.as_service_error() {
            let reasons = cancelled.cancellation_reasons();
            let code = |i: usize| reasons.get(i).and_then(|r| r.code()).unwrap_or("None");
            if code(0) == "ConditionalCheckFailed" {
                let stored = stored_version(reasons[0].item());
                return Ok(not_applied(stored, notification.version));
            }
            if code(1) == "ConditionalCheckFailed" {
                // Notified already under this id (progress was reset by hand, or a replay of it).
                return Ok(ApplyOutcome::Duplicate);
            }
        }
        let kind = match err.code() {
            Some("TransactionCanceledException" | "TransactionInProgressException") => StoreErrorKind::Throttled,
            _ => StoreErrorKind::Other,
        };
        let request_id = err.request_id().map(str::to_owned);
        Err(StoreError::new(kind, OP, err).with_request_id(request_id))
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
