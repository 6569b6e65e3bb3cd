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
    let projector = consumers::Projector::new(stack.read_model());
    let notifier = consumers::Notifier::new(stack.notifications().await);
    audit(
        &stack.dynamodb,
        &bus,
        &stack.name("OUTBOX_TABLE"),
        time::OffsetDateTime::UNIX_EPOCH,
        time::OffsetDateTime::now_utc(),
        &[&projector, &notifier],
        &replay::audit::BornIn::Anywhere,
    )
    .await
    .unwrap()
}
