//! The notifications' channel: an SNS FIFO topic that other systems subscribe to.
//!
//! Each notification is one message: its JSON ([`NotificationMessage`]) as the body, `kind` and
//! `guest_id` as message attributes a subscription can filter on, the reservation id as the message
//! group (SNS FIFO keeps a group's messages in publish order) and the notification id, which is
//! the event id, as the deduplication id (SNS FIFO drops a repeat within five minutes).

use aws_sdk_sns::Client;
use aws_sdk_sns::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sns::operation::RequestId;
use aws_sdk_sns::operation::publish::PublishError;
use aws_sdk_sns::types::MessageAttributeValue;
use domain::Notification;
use domain::ports::{Delivery, NotificationChannel, StoreError, StoreErrorKind};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// SNS FIFO's deduplication interval: a repeat of a deduplication id within it is accepted and
/// not delivered.
pub const SNS_FIFO_DEDUP_WINDOW: time::Duration = time::Duration::minutes(5);

/// The message attributes a subscription's filter policy can use.
pub const KIND_ATTRIBUTE: &str = "kind";
pub const GUEST_ATTRIBUTE: &str = "guest_id";

/// The body of a notification message, as subscribers receive it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationMessage {
    /// The event's id: the same notification always has the same id, so subscribers can drop a
    /// repeat that came after the topic's deduplication window.
    pub notification_id: String,
    pub kind: String,
    pub guest_id: String,
    pub reservation_id: String,
    pub version: u64,
    pub subject: String,
    pub body: String,
    pub trace_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
}

impl NotificationMessage {
    pub fn of(notification: &Notification) -> Self {
        Self {
            notification_id: notification.notification_id.as_str().to_owned(),
            kind: notification.kind.as_str().to_owned(),
            guest_id: notification.guest_id.as_str().to_owned(),
            reservation_id: notification.reservation_id.as_str().to_owned(),
            version: notification.version.get(),
            subject: notification.subject.clone(),
            body: notification.body.clone(),
            trace_id: notification.trace_id.to_string(),
            occurred_at: notification.occurred_at,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SnsTopic {
    client: Client,
    topic_arn: String,
}

impl SnsTopic {
    pub fn new(client: Client, topic_arn: impl Into<String>) -> Self {
        Self {
            client,
            topic_arn: topic_arn.into(),
        }
    }

    pub fn topic_arn(&self) -> &str {
        &self.topic_arn
    }
}

fn string_attribute(value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .expect("data_type is set")
}

impl NotificationChannel for SnsTopic {
    async fn publish(&self, notification: &Notification) -> Result<Delivery, StoreError> {
        const OP: &str = "Publish(notification)";
        let body = serde_json::to_string(&NotificationMessage::of(notification))
            .map_err(|e| StoreError::new(StoreErrorKind::Rejected, OP, e))?;
        let out = self
            .client
            .publish()
            .topic_arn(&self.topic_arn)
            .message(body)
            .message_group_id(notification.reservation_id.as_str())
            .message_deduplication_id(notification.notification_id.as_str())
            .message_attributes(KIND_ATTRIBUTE, string_attribute(notification.kind.as_str()))
            .message_attributes(GUEST_ATTRIBUTE, string_attribute(notification.guest_id.as_str()))
            .send()
            .await
            .map_err(|e| publish_error(OP, e))?;
        Ok(Delivery {
            message_id: out.message_id.unwrap_or_default(),
            sequence_number: out.sequence_number,
        })
    }

    fn dedup_window(&self) -> time::Duration {
        SNS_FIFO_DEDUP_WINDOW
    }
}

/// Refused for good (the topic is gone, the message is invalid or too large): the same publish can
/// never succeed, so the event is dead-lettered. Throttling and SNS's own failures are worth a
/// retry; anything else (permissions, KMS, the network) is retried too, since a fix of the
/// deployment heals it and nothing is lost meanwhile.
fn publish_error(operation: &'static str, err: SdkError<PublishError>) -> StoreError {
    let kind = match err.as_service_error() {
        Some(
            PublishError::NotFoundException(_)
            | PublishError::InvalidParameterException(_)
            | PublishError::InvalidParameterValueException(_)
            | PublishError::ValidationException(_),
        ) => StoreErrorKind::Rejected,
        Some(PublishError::KmsThrottlingException(_) | PublishError::InternalErrorException(_)) => {
            StoreErrorKind::Throttled
        }
        // Publish models no throttling error: SNS answers with these codes.
        Some(e) if matches!(e.code(), Some("Throttling" | "Throttled" | "ThrottlingException")) => {
            StoreErrorKind::Throttled
        }
        _ => StoreErrorKind::Other,
    };
    let request_id = err.request_id().map(str::to_owned);
    StoreError::new(kind, operation, err).with_request_id(request_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sns::error::ErrorMetadata;
    use aws_sdk_sns::operation::publish::PublishOutput;
    use aws_sdk_sns::types::error::{InvalidParameterException, NotFoundException};
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    use domain::{EventId, GuestId, NotificationKind, ReservationId, TraceId, Version};

    fn notification() -> Notification {
        Notification {
            notification_id: EventId::parse("01JEVT").unwrap(),
            kind: NotificationKind::ReservationConfirmed,
            guest_id: GuestId::parse("ada").unwrap(),
            reservation_id: ReservationId::parse("01JRES").unwrap(),
            version: Version::FIRST,
            subject: "Your reservation is confirmed".into(),
            body: "Reservation 01JRES ...".into(),
            trace_id: TraceId::from_header_or_new(Some("t-1")),
            occurred_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[tokio::test]
    async fn a_publish_is_grouped_by_reservation_deduplicated_by_event_and_filterable() {
        let publish = mock!(Client::publish)
            .match_requests(|r| {
                let attributes = r.message_attributes().unwrap();
                r.topic_arn() == Some("arn:aws:sns:us-east-1:000000000000:n.fifo")
                    && r.message_group_id() == Some("01JRES")
                    && r.message_deduplication_id() == Some("01JEVT")
                    && attributes[KIND_ATTRIBUTE].string_value() == Some("ReservationConfirmed")
                    && attributes[GUEST_ATTRIBUTE].string_value() == Some("ada")
                    && serde_json::from_str::<NotificationMessage>(r.message().unwrap()).unwrap()
                        == NotificationMessage::of(&notification())
            })
            .then_output(|| {
                PublishOutput::builder()
                    .message_id("m-1")
                    .sequence_number("10000000000000000001")
                    .build()
            });
        let topic = SnsTopic::new(
            mock_client!(aws_sdk_sns, RuleMode::Sequential, [&publish]),
            "arn:aws:sns:us-east-1:000000000000:n.fifo",
        );
        let delivery = topic.publish(&notification()).await.unwrap();
        assert_eq!(
            delivery,
            Delivery {
                message_id: "m-1".into(),
                sequence_number: Some("10000000000000000001".into())
            }
        );
        assert_eq!(publish.num_calls(), 1);
    }

    #[tokio::test]
    async fn refused_for_good_is_rejected_and_throttling_is_worth_a_retry() {
        let gone = mock!(Client::publish).then_error(|| {
            PublishError::NotFoundException(NotFoundException::builder().message("Topic does not exist").build())
        });
        let too_large = mock!(Client::publish).then_error(|| {
            PublishError::InvalidParameterException(
                InvalidParameterException::builder()
                    .message("Invalid parameter: Message too long")
                    .build(),
            )
        });
        let throttled = mock!(Client::publish).then_error(|| {
            PublishError::generic(
                ErrorMetadata::builder()
                    .code("Throttling")
                    .message("Rate exceeded")
                    .build(),
            )
        });
        let topic = SnsTopic::new(
            mock_client!(aws_sdk_sns, RuleMode::Sequential, [&gone, &too_large, &throttled]),
            "arn:aws:sns:us-east-1:000000000000:n.fifo",
        );
        let kinds = [
            topic.publish(&notification()).await.unwrap_err(),
            topic.publish(&notification()).await.unwrap_err(),
            topic.publish(&notification()).await.unwrap_err(),
        ]
        .map(|e| e.kind);
        assert_eq!(
            kinds,
            [
                StoreErrorKind::Rejected,
                StoreErrorKind::Rejected,
                StoreErrorKind::Throttled
            ]
        );
    }
}
