//! What each relay mode asks of DynamoDB while nothing happens, by operation: the stream relay
//! reads the outbox stream, the poller queries its index.

use crate::{MAPPING_IDLE_WAIT, Mode, stopped};
use anyhow::Result;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Counts each operation a client sends (retries included once).
#[derive(Debug, Clone, Default)]
struct CountCalls(Arc<Mutex<BTreeMap<String, u64>>>);

impl Intercept for CountCalls {
    fn name(&self) -> &'static str {
        "CountCalls"
    }

    fn read_after_execution(
        &self,
        _context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(metadata) = cfg.load::<Metadata>() {
            *self.0.lock().unwrap().entry(metadata.name().to_owned()).or_default() += 1;
        }
        Ok(())
    }
}

const TABLE_READS: &[&str] = &["Query", "Scan", "GetItem", "BatchGetItem"];

pub async fn run(mode: Mode, interval: Duration, seconds: u64) -> Result<()> {
    let stack = mode.stack().await;
    let table_calls = CountCalls::default();
    let stream_calls = CountCalls::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = match mode {
        Mode::Stream => {
            // The relay itself has no DynamoDB table client; only its mapping reads the stream.
            let streams = aws_sdk_dynamodbstreams::Client::from_conf(
                aws_sdk_dynamodbstreams::config::Builder::from(&stack.sdk)
                    .interceptor(stream_calls.clone())
                    .build(),
            );
            let arn = devstack::pipeline::outbox_stream_arn(&stack.dynamodb, &stack.name("OUTBOX_TABLE")).await?;
            let relay = relay::Relay::new(
                relay::KinesisSink::new(stack.kinesis.clone(), stack.name("EVENTS_STREAM")),
                dead_letters::MemoryDeadLetters::default(),
                relay::PublishPolicy::default(),
            );
            let mapping = event_source_mapping::EventSourceMapping::new(
                event_source_mapping::DynamoDbStreamsSource::new(streams, arn),
                devstack::pipeline::RelayHandler(relay),
                None::<event_source_mapping::MemoryOnFailure>,
                devstack::pipeline::relay_mapping_config(&settings::Regions::single(test_support::stack::TEST_REGION)),
            );
            tokio::spawn(mapping.run(MAPPING_IDLE_WAIT, stopped(stop_rx)))
        }
        Mode::Polling => {
            let dynamodb = aws_sdk_dynamodb::Client::from_conf(
                aws_sdk_dynamodb::config::Builder::from(&stack.sdk)
                    .interceptor(table_calls.clone())
                    .build(),
            );
            let poller = crate::poller(
                &stack,
                dynamodb,
                relay::PollerSettings {
                    interval,
                    ..Default::default()
                },
            );
            tokio::spawn(async move {
                poller
                    .run(Instant::now() + Duration::from_secs(3600), false, stopped(stop_rx))
                    .await;
            })
        }
    };
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop_tx.send_replace(true);
    task.await?;
    let per_minute = |calls: &CountCalls, filter: &dyn Fn(&str) -> bool| -> f64 {
        let total: u64 = calls
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(op, _)| filter(op))
            .map(|(_, n)| n)
            .sum();
        total as f64 * 60.0 / seconds as f64
    };
    let is_read = |op: &str| TABLE_READS.contains(&op);
    println!(
        "{}",
        json!({
            "benchmark": "idle",
            "mode": mode.name(),
            "interval_ms": mode.interval_ms(interval),
            "seconds": seconds,
            "table_reads_per_minute": per_minute(&table_calls, &is_read),
            "table_writes_per_minute": per_minute(&table_calls, &|op| !is_read(op)),
            "stream_reads_per_minute": per_minute(&stream_calls, &|op| op == "GetRecords"),
            "table_calls": *table_calls.0.lock().unwrap(),
            "stream_calls": *stream_calls.0.lock().unwrap(),
        })
    );
    Ok(())
}
