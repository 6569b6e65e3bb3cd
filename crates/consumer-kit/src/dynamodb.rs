//! A DynamoDB table of one item per reservation, keyed by `reservation_id`, whose `version`
//! attribute is the version applied: the consumer's state and its place in the reservation's
//! events in one item, written in one conditional `PutItem`.
//!
//! ```no_run
//! use aws_sdk_dynamodb::types::AttributeValue;
//! use reservation_events_consumer::dynamodb::VersionedTable;
//! use reservation_events_consumer::{ApplyOutcome, ConsumerError, ReservationEvent};
//! use std::collections::HashMap;
//!
//! async fn keep_status(table: &VersionedTable, event: &ReservationEvent) -> Result<ApplyOutcome, ConsumerError> {
//!     let item = HashMap::from([("status".to_owned(), AttributeValue::S(event.payload.status.to_string()))]);
//!     table.put_if_next(event, item).await
//! }
//! ```

use crate::consumer::ConsumerError;
use crate::event::ReservationEvent;
use crate::order::{ApplyOutcome, Version, decide};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use std::collections::HashMap;

/// The table's partition key (a string): the reservation id.
pub const KEY: &str = "reservation_id";
/// The attribute holding the version applied (a number).
pub const VERSION: &str = "version";

/// A table of one item per reservation with the version applied. Cloning shares the client.
#[derive(Debug, Clone)]
pub struct VersionedTable {
    client: Client,
    table: String,
}

impl VersionedTable {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Writes `attributes` as the item of `event`'s reservation at `event.version`, if that is
    /// the next version (the item is absent for version 1, at the version before otherwise).
    /// The key and `version` are set here. Otherwise nothing is written, and the item's stored
    /// version says whether the event is a duplicate or a gap.
    pub async fn put_if_next(
        &self,
        event: &ReservationEvent,
        mut attributes: HashMap<String, AttributeValue>,
    ) -> Result<ApplyOutcome, ConsumerError> {
        attributes.insert(KEY.to_owned(), AttributeValue::S(event.aggregate_id.clone()));
        attributes.insert(VERSION.to_owned(), number(event.version));
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(attributes))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let request = match event.version.previous() {
            None => request
                .condition_expression("attribute_not_exists(#key)")
                .expression_attribute_names("#key", KEY),
            Some(previous) => request
                .condition_expression("#version = :previous")
                .expression_attribute_names("#version", VERSION)
                .expression_attribute_values(":previous", number(previous)),
        };
        match request.send().await {
            Ok(_) => Ok(ApplyOutcome::Applied),
            Err(error) => match error.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(failed)) => {
                    match decide(stored_version(failed.item.as_ref()), event.version) {
                        // Refused, yet next: the item changed between the write and its
                        // refusal (another writer); try again.
                        ApplyOutcome::Applied => Err(ConsumerError::contended(error)),
                        not_applied => Ok(not_applied),
                    }
                }
                _ => Err(classify(error)),
            },
        }
    }

    /// The version applied for `reservation_id` (a consistent read).
    pub async fn applied_version(&self, reservation_id: &str) -> Result<Option<Version>, ConsumerError> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(KEY, AttributeValue::S(reservation_id.to_owned()))
            .projection_expression("#version")
            .expression_attribute_names("#version", VERSION)
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?
            .item;
        Ok(stored_version(item.as_ref()))
    }

    /// The item of `reservation_id`, whole (a consistent read).
    pub async fn get(&self, reservation_id: &str) -> Result<Option<HashMap<String, AttributeValue>>, ConsumerError> {
        Ok(self
            .client
            .get_item()
            .table_name(&self.table)
            .key(KEY, AttributeValue::S(reservation_id.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?
            .item)
    }
}

fn number(version: Version) -> AttributeValue {
    AttributeValue::N(version.get().to_string())
}

fn stored_version(item: Option<&HashMap<String, AttributeValue>>) -> Option<Version> {
    match item?.get(VERSION)? {
        AttributeValue::N(n) => n.parse().ok().and_then(Version::new),
        _ => None,
    }
}

/// Throttling and everything unknown may pass later; a request DynamoDB refuses as invalid
/// (`ValidationException`: an item over 400 KB, a key of the wrong type) never will.
fn classify<E, R>(error: SdkError<E, R>) -> ConsumerError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match error.code() {
        Some("ValidationException") => ConsumerError::rejected(error),
        Some("TransactionConflictException") => ConsumerError::contended(error),
        _ => ConsumerError::retry(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_version_is_read_from_its_number_attribute_only() {
        let item = |value: AttributeValue| HashMap::from([(VERSION.to_owned(), value)]);
        assert_eq!(stored_version(None), None);
        assert_eq!(
            stored_version(Some(&item(AttributeValue::N("3".into())))),
            Version::new(3)
        );
        assert_eq!(stored_version(Some(&item(AttributeValue::S("3".into())))), None);
        assert_eq!(stored_version(Some(&HashMap::new())), None);
    }
}
