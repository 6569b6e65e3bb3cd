//! Re-drive: give dead-lettered records back to the function that gave up on them, once the cause
//! is fixed (a consumer that now understands an event, an outbox item corrected in place...).
//!
//! Each [`DeadLetter`] keeps the record exactly as its function received it, so re-driving is
//! invoking that function's handler again with a one-record event of the same shape. A record
//! that goes through is done; one that is dead-lettered again stays, with its new reason.
//! Lambda's own on-failure records (batch metadata, no record) are not dead letters of ours: they
//! name a shard range, which `reservations-replay <consumer> --shard --from --to` re-drives, or
//! Kafka partitions' offsets, which `reservations-replay <consumer> --bus kafka --from P:O --to T`
//! re-drives.

use consumers::{Consumer, ConsumerHandler};
use dead_letters::{DeadLetter, MemoryDeadLetters};
use relay::{EventSink, Relay};
use serde_json::{Value, json};

/// What became of one letter.
#[derive(Debug, Clone, PartialEq)]
pub enum Redriven {
    /// The function took the record: applied, a duplicate, or published.
    Done,
    /// Still refused; the letter with the function's new reason.
    StillFailing(Box<DeadLetter>),
    /// Not for the functions this re-drive was given.
    NotMine,
}

/// The functions a re-drive can hand records to: the consumers (each letter names its consumer
/// as the consumer names itself) and the relay.
pub struct Functions<'a, C, S> {
    pub consumers: &'a [ConsumerHandler<C, MemoryDeadLetters>],
    pub relay: &'a Relay<S, MemoryDeadLetters>,
}

fn still_failing(letter: &DeadLetter, new: Option<DeadLetter>, fallback: &str) -> Redriven {
    let mut letter = letter.clone();
    match new {
        Some(new) => letter.reason = new.reason,
        None => letter.reason = fallback.to_owned(),
    }
    letter.dead_lettered_at = time::OffsetDateTime::now_utc();
    Redriven::StillFailing(Box::new(letter))
}

async fn to_consumer<C: Consumer>(handler: &ConsumerHandler<C, MemoryDeadLetters>, letter: &DeadLetter) -> Redriven {
    let before = handler.dead_letters().letters().len();
    // A Kafka record names its topic and partition; a Kinesis record has its `kinesis` part.
    let delivered_by_kafka = letter.record.get("topic").is_some() && letter.record.get("partition").is_some();
    let handed_back = if delivered_by_kafka {
        let topic_partition = format!(
            "{}-{}",
            letter.record["topic"].as_str().unwrap_or_default(),
            letter.record["partition"]
        );
        let event = json!({
            "eventSource": "aws:kafka",
            "eventSourceArn": letter.event_source_arn,
            "records": { topic_partition: [letter.record] },
        });
        match serde_json::from_value(event) {
            Ok(event) => !handler.handle_kafka(&event).await.0.batch_item_failures.is_empty(),
            Err(e) => return still_failing(letter, None, &format!("not a Kafka record: {e}")),
        }
    } else {
        match serde_json::from_value(json!({ "Records": [letter.record] })) {
            Ok(event) => !handler.handle(&event).await.0.batch_item_failures.is_empty(),
            Err(e) => return still_failing(letter, None, &format!("not a Kinesis record: {e}")),
        }
    };
    let new = handler.dead_letters().letters().into_iter().nth(before);
    match (new, handed_back) {
        (None, false) => Redriven::Done,
        (new, _) => still_failing(
            letter,
            new,
            "handed back for a retry (a gap or a store failure): re-drive again later",
        ),
    }
}

async fn to_relay<S: EventSink>(relay: &Relay<S, MemoryDeadLetters>, letter: &DeadLetter) -> Redriven {
    let before = relay.dead_letters().letters().len();
    // A record that is not a stream record is dead-lettered again by the relay, with the reason.
    let event = json!({ "Records": [letter.record] }).to_string();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let published = match relay.handle(&event, deadline).await {
        Ok(outcome) => outcome.response.batch_item_failures.is_empty(),
        Err(e) => return still_failing(letter, None, &format!("not a DynamoDB stream event: {e}")),
    };
    let new = relay.dead_letters().letters().into_iter().nth(before);
    match (new, published) {
        (None, true) => Redriven::Done,
        (new, _) => still_failing(letter, new, "the bus did not take it: re-drive again later"),
    }
}

/// Re-drives one letter to the function named in it.
pub async fn redrive<C: Consumer, S: EventSink>(functions: &Functions<'_, C, S>, letter: &DeadLetter) -> Redriven {
    if letter.function == relay::FUNCTION {
        return to_relay(functions.relay, letter).await;
    }
    match functions
        .consumers
        .iter()
        .find(|handler| handler.consumer().name() == letter.function)
    {
        Some(handler) => to_consumer(handler, letter).await,
        None => Redriven::NotMine,
    }
}

/// A line of a dead-letter file: one of our letters, or something else kept as it is (Lambda's
/// on-failure records, lines from a newer version).
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    Letter(DeadLetter),
    Other(Value),
}

/// One line of a file, or one message body of a dead-letter queue.
pub fn parse_line(line: &str) -> Line {
    match serde_json::from_str::<DeadLetter>(line) {
        Ok(letter) => Line::Letter(letter),
        Err(_) => Line::Other(serde_json::from_str(line).unwrap_or(Value::String(line.to_owned()))),
    }
}

/// The replay command that re-drives a Lambda on-failure record's shard range or Kafka offsets,
/// if it is one.
pub fn on_failure_command(record: &Value) -> Option<String> {
    if let Some(info) = record.get("KafkaBatchInfo") {
        return kafka_on_failure_command(info);
    }
    let info = &record["KinesisBatchInfo"];
    let shard = info["shardId"].as_str()?;
    let from = info["startSequenceNumber"].as_str()?;
    let to = info["endSequenceNumber"].as_str()?;
    let stream = info["streamArn"].as_str()?.rsplit('/').next()?;
    Some(format!(
        "reservations-replay <projector|notifier> --stream {stream} --shard {shard} --from {from} --to {to}"
    ))
}

/// Lambda names each topic-partition (`topic-0`) of a failed Kafka batch with its first and last
/// offsets and timestamps: read each partition from its first offset up to the batch's last
/// timestamp (records of the same millisecond after it are read too, and change nothing).
fn kafka_on_failure_command(info: &Value) -> Option<String> {
    let mut topic = None;
    let (mut from, mut to) = (Vec::new(), None::<String>);
    for (topic_partition, range) in info["recordsInfo"].as_object()? {
        let (name, partition) = topic_partition.rsplit_once('-')?;
        partition.parse::<i32>().ok()?;
        topic = Some(name.to_owned());
        let first = match &range["firstRecordOffset"] {
            Value::String(offset) => offset.clone(),
            other => other.as_i64()?.to_string(),
        };
        from.push(format!("{partition}:{first}"));
        let last = range["lastRecordTimestamp"].as_str()?.to_owned();
        if to.as_ref().is_none_or(|to| &last > to) {
            to = Some(last);
        }
    }
    Some(format!(
        "reservations-replay <projector|notifier> --bus kafka --topic {} --from {} --to {}",
        topic?,
        from.join(","),
        to?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kafka_on_failure_record_becomes_the_replay_of_its_partitions_offsets() {
        let record = json!({
            "requestContext": { "condition": "RetryAttemptsExhausted" },
            "KafkaBatchInfo": {
                "batchSize": 7,
                "eventSourceArn": "arn:aws:kafka:eu-west-1:123456789012:cluster/reservations/abc",
                "recordsInfo": {
                    "reservation-events-0": {
                        "firstRecordOffset": "120", "lastRecordOffset": "124",
                        "firstRecordTimestamp": "2026-12-03T10:00:00.100Z",
                        "lastRecordTimestamp": "2026-12-03T10:00:00.900Z"
                    },
                    "reservation-events-3": {
                        "firstRecordOffset": "95", "lastRecordOffset": "96",
                        "firstRecordTimestamp": "2026-12-03T10:00:00.200Z",
                        "lastRecordTimestamp": "2026-12-03T10:00:01.300Z"
                    }
                }
            }
        });
        assert_eq!(
            on_failure_command(&record).as_deref(),
            Some(
                "reservations-replay <projector|notifier> --bus kafka --topic reservation-events --from 0:120,3:95 --to 2026-12-03T10:00:01.300Z"
            )
        );
        assert_eq!(on_failure_command(&json!({ "KafkaBatchInfo": {} })), None);
    }
}
