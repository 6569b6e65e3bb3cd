//! The notifications channel on the local stack: the SNS FIFO topic the notifier publishes to and
//! the example subscriber, an SQS FIFO queue with raw message delivery, as template.yaml creates
//! them (`NotificationsTopic`, `NotificationsSubscriberQueue`).

use adapters::sns::{GUEST_ATTRIBUTE, KIND_ATTRIBUTE, NotificationMessage};
use anyhow::{Context, Result};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use std::time::Duration;

/// Where the local channel is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelResources {
    pub topic_arn: String,
    pub queue_url: String,
}

/// Creates the topic, the subscriber queue and the subscription unless they exist.
pub async fn provision(
    sns: &aws_sdk_sns::Client,
    sqs: &aws_sdk_sqs::Client,
    topic_name: &str,
    queue_name: &str,
) -> Result<ChannelResources> {
    let topic_arn = create_topic(sns, topic_name).await?;
    let queue_url = sqs
        .create_queue()
        .queue_name(queue_name)
        .attributes(QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .with_context(|| format!("creating queue {queue_name}"))?
        .queue_url
        .context("CreateQueue returned no URL")?;
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .context("the queue has no ARN")?;
    let subscriptions = sns.list_subscriptions_by_topic().topic_arn(&topic_arn).send().await?;
    if !subscriptions
        .subscriptions()
        .iter()
        .any(|s| s.endpoint() == Some(queue_arn.as_str()))
    {
        sns.subscribe()
            .topic_arn(&topic_arn)
            .protocol("sqs")
            .endpoint(&queue_arn)
            // The subscriber gets the notification's JSON as the body and its attributes as SQS
            // message attributes, not SNS's envelope.
            .attributes("RawMessageDelivery", "true")
            .send()
            .await
            .with_context(|| format!("subscribing {queue_name} to {topic_name}"))?;
    }
    Ok(ChannelResources { topic_arn, queue_url })
}

/// Creates the notifications FIFO topic `topic_name` unless it exists; its ARN.
pub async fn create_topic(sns: &aws_sdk_sns::Client, topic_name: &str) -> Result<String> {
    sns.create_topic()
        .name(topic_name)
        .attributes("FifoTopic", "true")
        // Deduplication by the id the notifier gives (the event id), not by content.
        .attributes("ContentBasedDeduplication", "false")
        .send()
        .await
        .with_context(|| format!("creating topic {topic_name}"))?
        .topic_arn
        .context("CreateTopic returned no ARN")
}

/// One message as the subscriber queue delivered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedNotification {
    pub message: NotificationMessage,
    pub kind_attribute: Option<String>,
    pub guest_attribute: Option<String>,
    pub message_group_id: Option<String>,
    /// When the queue got it (SQS `SentTimestamp`, epoch milliseconds).
    pub sent_timestamp_ms: Option<u64>,
}

/// Receives and deletes what the queue holds until it stays empty for `quiet`.
pub async fn receive_all(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    quiet: Duration,
) -> Result<Vec<ReceivedNotification>> {
    let mut received = Vec::new();
    let mut empty_since = tokio::time::Instant::now();
    loop {
        let batch = receive_batch(sqs, queue_url).await?;
        if batch.is_empty() {
            if empty_since.elapsed() >= quiet {
                return Ok(received);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        received.extend(batch);
        empty_since = tokio::time::Instant::now();
    }
}

/// Receives (and deletes) at most ten messages.
pub async fn receive_batch(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Result<Vec<ReceivedNotification>> {
    let out = sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .message_attribute_names("All")
        .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
        .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
        .send()
        .await
        .context("receiving from the notifications queue")?;
    let mut batch = Vec::new();
    for message in out.messages.unwrap_or_default() {
        let body = message.body().unwrap_or_default();
        let parsed: NotificationMessage =
            serde_json::from_str(body).with_context(|| format!("not a notification message: {body}"))?;
        let attribute = |name: &str| {
            message
                .message_attributes()
                .and_then(|a| a.get(name))
                .and_then(|v| v.string_value())
                .map(str::to_owned)
        };
        let system_attribute =
            |name: MessageSystemAttributeName| message.attributes().and_then(|a| a.get(&name)).cloned();
        batch.push(ReceivedNotification {
            message: parsed,
            kind_attribute: attribute(KIND_ATTRIBUTE),
            guest_attribute: attribute(GUEST_ATTRIBUTE),
            message_group_id: system_attribute(MessageSystemAttributeName::MessageGroupId),
            sent_timestamp_ms: system_attribute(MessageSystemAttributeName::SentTimestamp).and_then(|t| t.parse().ok()),
        });
        if let Some(handle) = message.receipt_handle() {
            sqs.delete_message()
                .queue_url(queue_url)
                .receipt_handle(handle)
                .send()
                .await
                .context("deleting a received notification")?;
        }
    }
    Ok(batch)
}
