//! Shared by the replay crate's integration tests.

use replay::audit::{AuditReport, audit};
use test_support::stack::TestStack;

/// The audit of everything the stack's outbox holds, against its stream and both consumers.
pub async fn audit_everything(stack: &TestStack) -> AuditReport {
    let stream = stack.name("EVENTS_STREAM");
    let bus = replay::Bus::Kinesis {
        client: &stack.kinesis,
        stream: &stream,
    };
    audit_everything_through(stack, &bus).await
}

/// The audit of everything the stack's outbox holds, against `topic` (the Kafka bus) and both
/// consumers.
pub async fn audit_everything_on(stack: &TestStack, topic: &test_support::kafka::TestTopic) -> AuditReport {
    let bus = replay::Bus::Kafka {
        client: &topic.client,
        config: &topic.config,
    };
    audit_everything_through(stack, &bus).await
}

/// The audit of everything the stack's outbox holds, against `bus` and both consumers.
async fn audit_everything_through(stack: &TestStack, bus: &replay::Bus<'_>) -> AuditReport {
    let projector = consumers::Projector::new(stack.read_model());
    let notifier = consumers::Notifier::new(stack.notifications().await);
    audit(
        &stack.dynamodb,
        bus,
        &stack.name("OUTBOX_TABLE"),
        time::OffsetDateTime::UNIX_EPOCH,
        time::OffsetDateTime::now_utc(),
        &[&projector, &notifier],
        &replay::audit::BornIn::Anywhere,
    )
    .await
    .unwrap()
}
