//! Tests of the whole product, whichever tools they drive, one binary (each file a module): the
//! chaos suite (the pipeline under faults, audited end to end, on Kinesis and on Kafka), several
//! Regions on the global-table stand-in, and the static checks that keep `template.yaml` equal to
//! the code and within what AWS accepts. They run on the embedded local stack that
//! `scripts/test.sh` starts (DynamoDB Local, kinesis-mock, moto, the Tansu Kafka broker).

mod chaos;
mod consumer_list;
mod multi_region;
mod template_exports;
mod template_global_tables;
mod template_limits;
mod template_matches;
mod template_rules;

use replay::audit::{AuditReport, audit};
use test_support::stack::TestStack;

/// The audit of everything the stack's outbox holds, against `bus` and every consumer of the
/// product: the oracle of the chaos suite.
async fn audit_everything(stack: &TestStack, bus: &replay::Bus<'_>) -> AuditReport {
    let mut built = Vec::new();
    for registration in consumers::ALL {
        built.push(stack.consumer(registration).await);
    }
    let consumers: Vec<&dyn replay::audit::AppliedVersions> =
        built.iter().map(|c| c as &dyn replay::audit::AppliedVersions).collect();
    audit(
        &stack.dynamodb,
        bus,
        &stack.name("OUTBOX_TABLE"),
        time::OffsetDateTime::UNIX_EPOCH,
        time::OffsetDateTime::now_utc(),
        &consumers,
        &replay::audit::BornIn::Anywhere,
    )
    .await
    .unwrap()
}
