//! Raw `TransactWriteItems` of the API's create (the slot update, the reservation and its outbox
//! event), from many clients: what DynamoDB Local does with no HTTP and no handler in front.

use crate::stats;
use adapters::RelayMode;
use adapters::dynamodb::items::{OutboxItem, ReservationItem, SlotItem, slot_pk};
use anyhow::Result;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use domain::{Capacity, EventId, GuestId, Reservation, ReservationId, Seats, Slot, SlotId, TraceId};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use test_support::stack::TestStack;
use tokio::time::Instant;

/// The API's create as bare SDK calls: the conditional slot update, the reservation put and the
/// outbox put, with the store's own item layouts, one transaction per reservation.
fn raw_create(stack: &TestStack, slot: &str) -> Result<Vec<TransactWriteItem>> {
    let slot_id = SlotId::parse(slot)?;
    let now = time::OffsetDateTime::now_utc();
    let (reservation, event) = Reservation::confirm(
        ReservationId::generate(),
        slot_id.clone(),
        GuestId::parse("bench")?,
        Seats::new(1)?,
        now,
    );
    let seats = AttributeValue::N("1".into());
    let update = Update::builder()
        .table_name(stack.name("RESERVATIONS_TABLE"))
        .key("pk", AttributeValue::S(slot_pk(&slot_id)))
        .update_expression("SET reserved = reserved + :seats, available = available - :seats")
        .condition_expression("available >= :seats")
        .expression_attribute_values(":seats", seats)
        .build()?;
    let reservation = Put::builder()
        .table_name(stack.name("RESERVATIONS_TABLE"))
        .set_item(Some(serde_dynamo::to_item(ReservationItem::new(&reservation))?))
        .condition_expression("attribute_not_exists(pk)")
        .build()?;
    let envelope = event.into_envelope(EventId::generate(), TraceId::generate());
    let outbox = Put::builder()
        .table_name(stack.name("OUTBOX_TABLE"))
        .set_item(Some(serde_dynamo::to_item(OutboxItem::new(
            &envelope,
            now + time::Duration::days(7),
            RelayMode::Stream,
            &stack.tables().regions,
        ))?))
        .condition_expression("attribute_not_exists(aggregate_id)")
        .build()?;
    Ok(vec![
        TransactWriteItem::builder().update(update).build(),
        TransactWriteItem::builder().put(reservation).build(),
        TransactWriteItem::builder().put(outbox).build(),
    ])
}

pub async fn run(clients: usize, seconds: u64) -> Result<()> {
    let stack = Arc::new(TestStack::start().await);
    const SLOTS: usize = 64;
    for slot in 0..SLOTS {
        let slot = Slot::new(SlotId::parse(format!("bench-{slot}"))?, Capacity::new(1_000_000)?);
        stack
            .dynamodb
            .put_item()
            .table_name(stack.name("RESERVATIONS_TABLE"))
            .set_item(Some(serde_dynamo::to_item(SlotItem::new(
                &slot,
                &stack.tables().regions.here,
            ))?))
            .send()
            .await?;
    }
    let end = Instant::now() + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..clients)
        .map(|c| {
            let stack = stack.clone();
            tokio::spawn(async move {
                let (mut latencies, mut failures) = (Vec::new(), 0u64);
                let mut i = c;
                while Instant::now() < end {
                    let items = raw_create(&stack, &format!("bench-{}", i % SLOTS))?;
                    let started = Instant::now();
                    let result = stack
                        .dynamodb
                        .transact_write_items()
                        .set_transact_items(Some(items))
                        .client_request_token(ulid::Ulid::new().to_string())
                        .send()
                        .await;
                    match result {
                        Ok(_) => latencies.push(started.elapsed().as_secs_f64() * 1000.0),
                        Err(_) => failures += 1,
                    }
                    i += clients;
                }
                anyhow::Ok((latencies, failures))
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failures = 0;
    for worker in workers {
        let (l, f) = worker.await??;
        latencies.extend(l);
        failures += f;
    }
    println!(
        "{}",
        json!({
            "benchmark": "transactions",
            "clients": clients,
            "seconds": seconds,
            "committed": latencies.len(),
            "failed": failures,
            "committed_per_second": latencies.len() as f64 / seconds as f64,
            "latency_ms": stats::summary(latencies),
        })
    );
    Ok(())
}
