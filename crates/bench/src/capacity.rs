//! DynamoDB capacity as the engine reports it: an SDK interceptor asks every call the product
//! makes for `ReturnConsumedCapacity = TOTAL` and adds up what comes back, per operation. Put it
//! on a client with [`metered_client`]; DynamoDB Local reports capacity as DynamoDB does.

use aws_sdk_dynamodb::operation::{
    delete_item::{DeleteItemInput, DeleteItemOutput},
    get_item::{GetItemInput, GetItemOutput},
    put_item::{PutItemInput, PutItemOutput},
    query::{QueryInput, QueryOutput},
    scan::{ScanInput, ScanOutput},
    transact_write_items::{TransactWriteItemsInput, TransactWriteItemsOutput},
    update_item::{UpdateItemInput, UpdateItemOutput},
};
use aws_sdk_dynamodb::types::{ConsumedCapacity, ReturnConsumedCapacity};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    AfterDeserializationInterceptorContextRef, BeforeSerializationInterceptorContextMut,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Units and calls of one operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Units {
    pub calls: u64,
    /// Read request units (on-demand) or read capacity units (provisioned).
    pub read: f64,
    pub write: f64,
}

/// What a client consumed so far, by operation name.
#[derive(Debug, Clone, Default)]
pub struct CapacityMeter(Arc<Mutex<BTreeMap<String, Units>>>);

impl CapacityMeter {
    pub fn snapshot(&self) -> BTreeMap<String, Units> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// All operations together.
    pub fn total(&self) -> Units {
        self.snapshot().values().fold(Units::default(), |sum, u| Units {
            calls: sum.calls + u.calls,
            read: sum.read + u.read,
            write: sum.write + u.write,
        })
    }

    /// Forgets what was counted (between the phases of a measurement).
    pub fn reset(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

const WRITES: &[&str] = &[
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "TransactWriteItems",
    "BatchWriteItem",
];

fn total_units(capacity: &[ConsumedCapacity]) -> f64 {
    capacity.iter().filter_map(ConsumedCapacity::capacity_units).sum()
}

impl Intercept for CapacityMeter {
    fn name(&self) -> &'static str {
        "CapacityMeter"
    }

    fn modify_before_serialization(
        &self,
        context: &mut BeforeSerializationInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let input = context.input_mut();
        let total = Some(ReturnConsumedCapacity::Total);
        if let Some(i) = input.downcast_mut::<PutItemInput>() {
            i.return_consumed_capacity = total;
        } else if let Some(i) = input.downcast_mut::<UpdateItemInput>() {
            i.return_consumed_capacity = total;
        } else if let Some(i) = input.downcast_mut::<DeleteItemInput>() {
            i.return_consumed_capacity = total;
        } else if let Some(i) = input.downcast_mut::<GetItemInput>() {
            i.return_consumed_capacity = total;
        } else if let Some(i) = input.downcast_mut::<QueryInput>() {
            i.return_consumed_capacity = total;
        } else if let Some(i) = input.downcast_mut::<ScanInput>() {
            i.return_consumed_capacity = total;
        } else if let Some(i) = input.downcast_mut::<TransactWriteItemsInput>() {
            i.return_consumed_capacity = total;
        }
        Ok(())
    }

    /// Successful calls only: a failed conditional write also consumes write units, but the
    /// error does not say how many. The measurements here make none fail.
    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Ok(output) = context.output_or_error() else {
            return Ok(());
        };
        let one = |c: Option<&ConsumedCapacity>| c.and_then(ConsumedCapacity::capacity_units).unwrap_or(0.0);
        let units = if let Some(o) = output.downcast_ref::<PutItemOutput>() {
            one(o.consumed_capacity())
        } else if let Some(o) = output.downcast_ref::<UpdateItemOutput>() {
            one(o.consumed_capacity())
        } else if let Some(o) = output.downcast_ref::<DeleteItemOutput>() {
            one(o.consumed_capacity())
        } else if let Some(o) = output.downcast_ref::<GetItemOutput>() {
            one(o.consumed_capacity())
        } else if let Some(o) = output.downcast_ref::<QueryOutput>() {
            one(o.consumed_capacity())
        } else if let Some(o) = output.downcast_ref::<ScanOutput>() {
            one(o.consumed_capacity())
        } else if let Some(o) = output.downcast_ref::<TransactWriteItemsOutput>() {
            total_units(o.consumed_capacity())
        } else {
            0.0
        };
        let operation = cfg.load::<Metadata>().map(|m| m.name().to_owned()).unwrap_or_default();
        let is_write = WRITES.contains(&operation.as_str());
        let mut totals = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let entry = totals.entry(operation).or_default();
        entry.calls += 1;
        if is_write {
            entry.write += units;
        } else {
            entry.read += units;
        }
        Ok(())
    }
}

/// A DynamoDB client of `sdk` whose every call is metered by `meter`.
pub fn metered_client(sdk: &aws_config::SdkConfig, meter: &CapacityMeter) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(sdk)
            .interceptor(meter.clone())
            .build(),
    )
}

/// Kinesis PUT payload units of one record: 25 KB each, partition key included.
pub fn put_payload_units(record_bytes: usize) -> u64 {
    record_bytes.div_ceil(25 * 1024) as u64
}

/// Capacity per reservation, per cancel and per relayed event in each relay mode, and Kinesis PUT
/// payload units per event (`pipeline-bench capacity`). The consumers' units are measured by
/// `consumer-bench`.
pub async fn run(reservations: usize, cancels: usize) -> anyhow::Result<serde_json::Value> {
    use anyhow::ensure;
    use api::request::{CreateReservation, PutSlot};
    use api::{ReservationService, RetryPolicy};
    use domain::{Capacity, GuestId, Seats, SlotId, TraceId};
    use futures::StreamExt;

    ensure!(cancels <= reservations, "cannot cancel more reservations than are made");
    let mut modes = Vec::new();
    for mode in [crate::Mode::Stream, crate::Mode::Polling] {
        let mut stack = mode.stack().await;
        let meter = CapacityMeter::default();
        stack.dynamodb = metered_client(&stack.sdk, &meter);
        let service = ReservationService::new(stack.store(), RetryPolicy::default());
        let slots: Vec<SlotId> = (0..64).map(|i| SlotId::parse(format!("bench-{i}")).unwrap()).collect();
        for slot in &slots {
            let capacity = Capacity::new(i64::from(Capacity::MAX))?;
            service
                .put_slot(
                    slot,
                    PutSlot {
                        capacity,
                        shards: None,
                        home_region: None,
                    },
                )
                .await?;
        }

        meter.reset();
        let created: Vec<domain::ReservationId> = futures::stream::iter(0..reservations)
            .map(|n| {
                let command = CreateReservation {
                    slot_id: slots[n % slots.len()].clone(),
                    guest_id: GuestId::parse(format!("guest-{n}")).unwrap(),
                    seats: Seats::new(1).unwrap(),
                };
                let service = &service;
                async move {
                    match service.create_reservation(command, None, TraceId::generate()).await? {
                        api::service::CreateOutcome::Created(r) => Ok::<_, anyhow::Error>(r.reservation_id),
                        other => anyhow::bail!("unexpected create outcome {other:?}"),
                    }
                }
            })
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;
        let create = meter.snapshot();

        meter.reset();
        let cancelled: Vec<anyhow::Result<()>> = futures::stream::iter(created.iter().take(cancels))
            .map(|id| {
                let service = &service;
                async move {
                    service.cancel_reservation(id, TraceId::generate()).await?;
                    Ok(())
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        cancelled.into_iter().collect::<anyhow::Result<()>>()?;
        let cancel = meter.snapshot();

        let events = reservations + cancels;
        match mode {
            // The stream relay has no table client: Lambda reads the stream (free for triggers),
            // the relay writes to Kinesis only.
            crate::Mode::Stream => {
                let mut mapping = stack.relay_mapping().await;
                meter.reset(); // finding the stream is setup, not relaying
                mapping.drain().await?;
            }
            crate::Mode::Polling => {
                meter.reset();
                let until = tokio::time::Instant::now() + std::time::Duration::from_secs(600);
                poller(&stack, std::time::Duration::from_secs(1))
                    .run(until, true, std::future::pending())
                    .await;
            }
        }
        let relayed = meter.snapshot();
        // What the poller costs with nothing to publish, at its default interval and a fast one.
        let mut idle = serde_json::Map::new();
        if mode == crate::Mode::Polling {
            for interval_ms in [1000u64, 100] {
                meter.reset();
                let seconds = 30;
                let until = tokio::time::Instant::now() + std::time::Duration::from_secs(seconds);
                poller(&stack, std::time::Duration::from_millis(interval_ms))
                    .run(until, false, std::future::pending())
                    .await;
                let units = meter.total();
                let per_minute = 60.0 / seconds as f64;
                idle.insert(
                    interval_ms.to_string(),
                    serde_json::json!({
                        "seconds": seconds,
                        "read_units_per_minute": units.read * per_minute,
                        "write_units_per_minute": units.write * per_minute,
                        "calls_per_minute": units.calls as f64 * per_minute,
                        "by_operation": meter.snapshot(),
                    }),
                );
            }
        }
        let on_kinesis = stack.records_on_kinesis().await;
        ensure!(
            on_kinesis.len() == events,
            "{} events committed, {} on the stream",
            events,
            on_kinesis.len()
        );
        let bytes: usize = on_kinesis.iter().map(|r| r.partition_key.len() + r.data.len()).sum();
        let put_units: u64 = on_kinesis
            .iter()
            .map(|r| put_payload_units(r.partition_key.len() + r.data.len()))
            .sum();

        let per = |snapshot: &BTreeMap<String, Units>, count: usize| {
            let (read, write, calls) = snapshot
                .values()
                .fold((0.0, 0.0, 0), |(r, w, c), u| (r + u.read, w + u.write, c + u.calls));
            serde_json::json!({
                "read": read / count as f64,
                "write": write / count as f64,
                "calls": calls as f64 / count as f64,
                "by_operation": snapshot,
            })
        };
        modes.push(serde_json::json!({
            "mode": mode.name(),
            "reservations": reservations,
            "cancels": cancels,
            "per_reservation": per(&create, reservations),
            "per_cancel": per(&cancel, cancels.max(1)),
            "per_relayed_event": per(&relayed, events),
            "idle": idle,
            "kinesis": {
                "events": events,
                "mean_record_bytes": bytes as f64 / events as f64,
                "put_payload_units_per_event": put_units as f64 / events as f64,
            },
        }));
    }
    Ok(serde_json::json!({ "benchmark": "capacity", "modes": modes }))
}

/// The polling publisher on the stack's (metered) outbox, with the deployed settings.
fn poller(stack: &test_support::stack::TestStack, interval: std::time::Duration) -> crate::BenchPoller {
    crate::poller(
        stack,
        stack.dynamodb.clone(),
        relay::PollerSettings {
            interval,
            // DynamoDB Local updates the index with the write itself.
            drain_settle: std::time::Duration::from_millis(100),
            ..relay::PollerSettings::default()
        },
    )
}
