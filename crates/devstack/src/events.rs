//! Reading the events back from Kinesis (every shard from the start, parents before children,
//! through the same event source mapping the consumers will use) or from the Kafka topic.

use anyhow::Result;
use aws_lambda_events::event::kinesis::KinesisEvent;
use base64::Engine;
use domain::EventEnvelope;
use event_source_mapping::function::{TypedFunction, TypedHandler};
use event_source_mapping::{EventSourceMapping, FunctionError, KinesisSource, MappingConfig, MemoryOnFailure};
use std::sync::Mutex;
use tokio::time::Instant;

/// An event as read from the stream, with where it was.
#[derive(Debug, Clone)]
pub struct ReadEvent {
    pub partition_key: String,
    pub sequence_number: String,
    /// The record's data as it was on the stream.
    pub data: Vec<u8>,
    pub envelope: Result<EventEnvelope, String>,
}

/// Collects (or prints) every record it is given, in delivery order.
pub struct Collector {
    print: bool,
    pub events: Mutex<Vec<ReadEvent>>,
}

impl TypedHandler for Collector {
    type Event = KinesisEvent;
    type Response = serde_json::Value;

    async fn handle(&self, event: KinesisEvent, _deadline: Instant) -> Result<serde_json::Value, FunctionError> {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        for record in event.records {
            let data = &record.kinesis.data.0;
            let envelope = serde_json::from_slice::<EventEnvelope>(data).map_err(|e| e.to_string());
            if self.print {
                match &envelope {
                    Ok(_) => println!("{}", String::from_utf8_lossy(data)),
                    Err(e) => eprintln!(
                        "not an event envelope ({e}): {}",
                        base64::engine::general_purpose::STANDARD.encode(data)
                    ),
                }
            }
            events.push(ReadEvent {
                partition_key: record.kinesis.partition_key.clone(),
                sequence_number: record.kinesis.sequence_number.clone(),
                data: data.to_vec(),
                envelope,
            });
        }
        Ok(serde_json::json!({ "batchItemFailures": [] }))
    }
}

pub type CollectorMapping = EventSourceMapping<KinesisSource, TypedFunction<Collector>, MemoryOnFailure>;

async fn mapping(sdk: &aws_config::SdkConfig, stream: &str, print: bool) -> Result<CollectorMapping> {
    let source = KinesisSource::new(aws_sdk_kinesis::Client::new(sdk), stream).await?;
    let collector = Collector {
        print,
        events: Mutex::new(Vec::new()),
    };
    let config = MappingConfig {
        function_name: "events".into(),
        batch_size: 1000,
        // A reader that cannot take a batch says so and moves on instead of re-reading it forever.
        maximum_retry_attempts: Some(2),
        ..Default::default()
    };
    Ok(EventSourceMapping::new(
        source,
        TypedFunction::new(collector),
        None,
        config,
    ))
}

/// Prints every event on `stream` as a JSON line.
pub async fn printer(sdk: &aws_config::SdkConfig, stream: &str) -> Result<CollectorMapping> {
    mapping(sdk, stream, true).await
}

/// Collects every event on `stream`; read them with `mapping.function()`.
pub async fn collector(sdk: &aws_config::SdkConfig, stream: &str) -> Result<CollectorMapping> {
    mapping(sdk, stream, false).await
}

/// Prints the events on the Kafka topic of `kafka` as JSON lines, every partition from its first
/// offset (each partition in offset order); with `follow`, keeps reading until `stop`.
pub async fn print_kafka(
    kafka: &kafka_bus::KafkaConfig,
    follow: bool,
    stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let client = kafka_bus::connect(kafka, None).await?;
    let partitions = kafka_bus::partitions(&client, kafka).await?;
    let mut next: Vec<i64> = vec![0; partitions.len()];
    tokio::pin!(stop);
    loop {
        let mut printed = 0;
        for (partition, next) in partitions.iter().zip(next.iter_mut()) {
            for record in kafka_bus::read_from(partition, *next).await? {
                let data = record.value.unwrap_or_default();
                match serde_json::from_slice::<EventEnvelope>(&data) {
                    Ok(_) => println!("{}", String::from_utf8_lossy(&data)),
                    Err(e) => eprintln!(
                        "not an event envelope ({e}) at partition {} offset {}: {}",
                        record.partition,
                        record.offset,
                        base64::engine::general_purpose::STANDARD.encode(&data)
                    ),
                }
                *next = record.offset + 1;
                printed += 1;
            }
        }
        if !follow {
            return Ok(());
        }
        if printed == 0 {
            tokio::select! {
                () = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
                () = &mut stop => return Ok(()),
            }
        }
    }
}
