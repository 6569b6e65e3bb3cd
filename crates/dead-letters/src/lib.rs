//! Records a stream function can never process go here, whole, so they can be found, fixed and
//! re-driven. In AWS that is an SQS queue; locally a JSON-lines file; in tests memory.
//!
//! The letter's format and its destinations are the consumer kit's (`reservation-events-consumer`),
//! so a letter the relay writes, one the product's consumers write and one an outside consumer
//! writes are the same document, and `reservations-replay redrive` reads them all. The reader of
//! a dead-letter queue, which only the re-drive needs, is behind the `queue-reader` feature: no
//! Lambda links it.

pub use reservation_events_consumer::dead_letter::{
    ConfiguredDeadLetters, DeadLetter, DeadLetterError, DeadLetterTarget, DeadLetters, JsonLinesDeadLetters,
    MemoryDeadLetters, NoDeadLetterTarget, SqsDeadLetters,
};

#[cfg(feature = "queue-reader")]
pub use queue::{QueueError, QueuedMessage, SqsDeadLetterQueue};

#[cfg(feature = "queue-reader")]
mod queue {
    /// A message taken from a dead-letter queue: its body, and the handle that deletes it or gives
    /// it back.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct QueuedMessage {
        pub body: String,
        pub receipt_handle: String,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("{operation} on {queue_url} failed")]
    pub struct QueueError {
        pub operation: &'static str,
        pub queue_url: String,
        #[source]
        pub source: Box<dyn std::error::Error + Send + Sync + 'static>,
    }

    /// Reads a dead-letter queue for a re-drive: takes every message out of sight for a while, then
    /// deletes each one that was dealt with and gives the others back.
    pub struct SqsDeadLetterQueue {
        client: aws_sdk_sqs::Client,
        queue_url: String,
    }

    impl SqsDeadLetterQueue {
        pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
            Self {
                client,
                queue_url: queue_url.into(),
            }
        }

        pub fn queue_url(&self) -> &str {
            &self.queue_url
        }

        fn failed<E: std::error::Error + Send + Sync + 'static>(
            &self,
            operation: &'static str,
        ) -> impl FnOnce(E) -> QueueError + '_ {
            move |e| QueueError {
                operation,
                queue_url: self.queue_url.clone(),
                source: Box::new(e),
            }
        }

        /// Every message visible now, each hidden for `hold` (it comes back by itself if the re-drive
        /// stops before dealing with it). Taking them all first means replacement letters sent during
        /// the re-drive are not read again by it. Long polling (1 s): an empty answer means empty.
        pub async fn take_all(&self, hold: std::time::Duration) -> Result<Vec<QueuedMessage>, QueueError> {
            let mut taken = Vec::new();
            loop {
                let answer = self
                    .client
                    .receive_message()
                    .queue_url(&self.queue_url)
                    .max_number_of_messages(10)
                    .visibility_timeout(i32::try_from(hold.as_secs()).unwrap_or(i32::MAX))
                    .wait_time_seconds(1)
                    .send()
                    .await
                    .map_err(self.failed("ReceiveMessage"))?;
                let messages = answer.messages.unwrap_or_default();
                if messages.is_empty() {
                    return Ok(taken);
                }
                taken.extend(messages.into_iter().filter_map(|m| {
                    Some(QueuedMessage {
                        body: m.body?,
                        receipt_handle: m.receipt_handle?,
                    })
                }));
            }
        }

        pub async fn delete(&self, message: &QueuedMessage) -> Result<(), QueueError> {
            self.client
                .delete_message()
                .queue_url(&self.queue_url)
                .receipt_handle(&message.receipt_handle)
                .send()
                .await
                .map_err(self.failed("DeleteMessage"))?;
            Ok(())
        }

        /// Makes a taken message visible again at once.
        pub async fn give_back(&self, message: &QueuedMessage) -> Result<(), QueueError> {
            self.client
                .change_message_visibility()
                .queue_url(&self.queue_url)
                .receipt_handle(&message.receipt_handle)
                .visibility_timeout(0)
                .send()
                .await
                .map_err(self.failed("ChangeMessageVisibility"))?;
            Ok(())
        }
    }
}
