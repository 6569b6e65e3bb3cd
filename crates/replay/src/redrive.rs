//! Re-drive: give dead-lettered records back to the function that gave up on them, once the cause
//! is fixed (a consumer that now understands an event, an outbox item corrected in place...).
//!
//! Each [`DeadLetter`] keeps the record exactly as its function received it, so re-driving is
//! invoking that function's handler again with a one-record event of the same shape. A record
//! that goes through is done; one that is dead-lettered again stays, with its new reason.
//! Lambda's own on-failure records (batch metadata, no record) are not dead letters of ours: they
//! name a shard range, which `reservations-replay <consumer> --shard --from --to` re-drives.

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

/// The functions a re-drive can hand records to.
pub struct Functions<'a, P, N, S> {
    pub projector: &'a ConsumerHandler<P, MemoryDeadLetters>,
    pub notifier: &'a ConsumerHandler<N, MemoryDeadLetters>,
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
    let event = match serde_json::from_value(json!({ "Records": [letter.record] })) {
        Ok(event) => event,
        Err(e) => return still_failing(letter, None, &format!("not a Kinesis record: {e}")),
    };
    let (response, _) = handler.handle(&event).await;
    let new = handler.dead_letters().letters().into_iter().nth(before);
    match (new, response.batch_item_failures.is_empty()) {
        (None, true) => Redriven::Done,
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
        (new, _) => still_failing(letter, new, "Kinesis did not take it: re-drive again later"),
    }
}

/// Re-drives one letter to the function named in it.
pub async fn redrive<P: Consumer, N: Consumer, S: EventSink>(
    functions: &Functions<'_, P, N, S>,
    letter: &DeadLetter,
) -> Redriven {
    match letter.function.as_str() {
        "projector" => to_consumer(functions.projector, letter).await,
        "notifier" => to_consumer(functions.notifier, letter).await,
        "relay" => to_relay(functions.relay, letter).await,
        _ => Redriven::NotMine,
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

/// The replay command that re-drives a Lambda on-failure record's shard range, if it is one.
pub fn on_failure_command(record: &Value) -> Option<String> {
    let info = &record["KinesisBatchInfo"];
    let shard = info["shardId"].as_str()?;
    let from = info["startSequenceNumber"].as_str()?;
    let to = info["endSequenceNumber"].as_str()?;
    let stream = info["streamArn"].as_str()?.rsplit('/').next()?;
    Some(format!(
        "reservations-replay <projector|notifier> --stream {stream} --shard {shard} --from {from} --to {to}"
    ))
}
