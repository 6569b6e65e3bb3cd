//! Turning SDK errors into store errors and business outcomes.
//!
//! `TransactWriteItems` reports why it was cancelled as one reason per item, in request order;
//! the caller knows which index is which item, so the reasons are interpreted per use case.

use super::items::{HOME_REGION, MOVING_TO, SHARDS, SlotHome};
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::RequestId;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use domain::ports::{CommitError, StoreError, StoreErrorKind};
use std::error::Error as StdError;

const THROTTLING_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "ThrottlingException",
    // Cancellation reason codes use these spellings.
    "ThrottlingError",
    "ProvisionedThroughputExceeded",
];

pub(crate) fn store_error<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    let kind = match err.code() {
        Some(code) if THROTTLING_CODES.contains(&code) => StoreErrorKind::Throttled,
        Some("ValidationException") => StoreErrorKind::Rejected,
        _ => StoreErrorKind::Other,
    };
    let request_id = err.request_id().map(str::to_owned);
    StoreError::new(kind, operation, err).with_request_id(request_id)
}

const FAILED: &str = "ConditionalCheckFailed";

pub(crate) fn is_conditional_check_failure<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    err.code() == Some("ConditionalCheckFailedException")
}

/// One item's fate in a cancelled transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ItemReason {
    pub code: String,
    /// Whether DynamoDB returned the item's old image (it exists) for a failed condition.
    pub item_present: bool,
    /// The slot's home Region in that old image, when it names one.
    pub home_region: Option<String>,
    /// The Region the slot's home is moving to, in that old image.
    pub moving_to: Option<String>,
    /// How many shards the slot has, when that old image is a sharded slot's item.
    pub shards: Option<u16>,
}

#[derive(Debug)]
pub(crate) struct CancellationReasons {
    operation: &'static str,
    request_id: Option<String>,
    reasons: Vec<ItemReason>,
}

pub(crate) enum TransactionOutcome {
    Cancelled(CancellationReasons),
    Failed(StoreError),
}

/// Why a booking's transaction was cancelled, as the store goes on from it.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// An answer for the caller.
    Commit(CommitError),
    /// The shards it drew on had too few seats left (for a slot of one shard: sold out).
    Short,
    /// It was written for a slot of one shard, and the slot has this many.
    Sharded(u16),
}

#[derive(Debug, thiserror::Error)]
#[error("transaction cancelled with unexpected reasons {0:?}")]
struct UnexpectedCancellation(Vec<ItemReason>);

pub(crate) fn classify_transaction_error(
    operation: &'static str,
    err: SdkError<TransactWriteItemsError, HttpResponse>,
) -> TransactionOutcome {
    if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) = err.as_service_error() {
        let reasons = cancelled
            .cancellation_reasons()
            .iter()
            .map(|r| ItemReason {
                code: r.code().unwrap_or("None").to_owned(),
                item_present: r.item().is_some_and(|item| !item.is_empty()),
                home_region: text(r.item(), HOME_REGION),
                moving_to: text(r.item(), MOVING_TO),
                shards: r
                    .item()
                    .and_then(|item| item.get(SHARDS))
                    .and_then(|v| v.as_n().ok())
                    .and_then(|n| n.parse().ok()),
            })
            .collect();
        return TransactionOutcome::Cancelled(CancellationReasons {
            operation,
            request_id: err.request_id().map(str::to_owned),
            reasons,
        });
    }
    TransactionOutcome::Failed(store_error(operation, err))
}

fn text(
    item: Option<&std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>>,
    name: &str,
) -> Option<String> {
    item.and_then(|item| item.get(name))
        .and_then(|value| value.as_s().ok())
        .cloned()
}

impl CancellationReasons {
    fn code(&self, index: usize) -> Option<&str> {
        self.reasons.get(index).map(|r| r.code.as_str())
    }

    fn unexpected(&self, kind: StoreErrorKind) -> CommitError {
        CommitError::Store(
            StoreError::new(kind, self.operation, UnexpectedCancellation(self.reasons.clone()))
                .with_request_id(self.request_id.clone()),
        )
    }

    /// Items in order: `shard_items` slot updates (the one slot item, or the shards a booking
    /// draws on), the reservation put, the outbox put, the idempotency record (optional).
    pub(crate) fn for_creation(&self, home: &SlotHome, shard_items: usize) -> Refusal {
        if self.code(shard_items + 2) == Some(FAILED) {
            return Refusal::Commit(CommitError::IdempotencyKeyTaken);
        }
        if let Some(slot) = self.reasons[..shard_items.min(self.reasons.len())]
            .iter()
            .find(|r| r.code == FAILED)
        {
            return if !slot.item_present {
                Refusal::Commit(CommitError::SlotNotFound)
            } else if let Some(not_home) = home.refusal(slot.home_region.as_deref(), slot.moving_to.as_deref()) {
                Refusal::Commit(not_home.into())
            } else if let Some(shards) = slot.shards.filter(|k| *k > 1) {
                Refusal::Sharded(shards)
            } else {
                Refusal::Short
            };
        }
        Refusal::Commit(self.common())
    }

    /// Items in order: 0 reservation put (conditional on version), `shard_items` slot updates
    /// (the seats back where they came from), the outbox put.
    pub(crate) fn for_cancellation(&self, home: &SlotHome, shard_items: usize) -> CommitError {
        let shards = self.reasons.iter().skip(1).take(shard_items);
        for slot in shards.filter(|r| r.code == FAILED) {
            if let Some(not_home) = home.refusal(slot.home_region.as_deref(), slot.moving_to.as_deref()) {
                return not_home.into();
            }
        }
        if self.code(0) == Some(FAILED) {
            return CommitError::ReservationChanged;
        }
        self.common()
    }

    /// Whether a condition failed on one of the first `items` items (a slot write that raced).
    pub(crate) fn condition_failed_in(&self, items: usize) -> bool {
        self.reasons.iter().take(items).any(|r| r.code == FAILED)
    }

    /// A cancelled transaction that no condition of the use case explains.
    pub(crate) fn commit_error(&self) -> CommitError {
        self.common()
    }

    fn common(&self) -> CommitError {
        match cancellation_kind(self.reasons.iter().map(|r| r.code.as_str())) {
            StoreErrorKind::Contended => CommitError::Contention,
            kind => self.unexpected(kind),
        }
    }
}

/// What a cancelled transaction's reason codes say, once the use case's own conditions are
/// accounted for: a conflicting writer, throttling, or something else.
pub(crate) fn cancellation_kind<'a>(mut codes: impl Iterator<Item = &'a str> + Clone) -> StoreErrorKind {
    if codes.clone().any(|code| code == "TransactionConflict") {
        StoreErrorKind::Contended
    } else if codes.any(|code| THROTTLING_CODES.contains(&code)) {
        StoreErrorKind::Throttled
    } else {
        StoreErrorKind::Other
    }
}
