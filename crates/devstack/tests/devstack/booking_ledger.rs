//! The booking ledger (`examples/booking-ledger`), a consumer in a stack of its own, on the local
//! stack as `scripts/dev.sh --consumer examples/booking-ledger` runs it: its table made from its
//! template, its own Lambda binary fed through the Runtime API by a mapping on the bus. On Kinesis
//! and on Kafka, reservations made and cancelled through the API reach the ledger at their latest
//! version, each version applied once (the kit's metrics, from the function's own output), and a
//! second reading of the bus applies nothing.

use devstack::outside::{self, OutsideConsumer};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use test_support::kafka::TestTopic;
use test_support::stack::{TestApi, TestStack};

/// The ledger's binary, as the workspace's build left it beside the test binaries.
fn binary() -> PathBuf {
    test_support::workspace_binary("booking-ledger")
}

fn template() -> OutsideConsumer {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/booking-ledger/template.yaml");
    OutsideConsumer::from_template(&path).expect("the ledger's template")
}

/// The ledger on this stack: its table (named after the stack) and its function's environment.
async fn ledger(stack: &TestStack, bus: settings::EventBus) -> (String, HashMap<String, String>) {
    let consumer = template();
    let prefix = format!("{}-", stack.name("EVENTS_STREAM"));
    let (_, dead_letters, _) = outside::files(&stack.dead_letter_dir(), "ledger");
    let environment = consumer
        .provision(&stack.dynamodb, &prefix, bus, &dead_letters)
        .await
        .unwrap();
    (consumer.table_name(&prefix, "LedgerTable"), environment)
}

/// reservation id → (status, version) in the ledger.
async fn entries(stack: &TestStack, table: &str) -> BTreeMap<String, (String, String)> {
    let items = stack
        .dynamodb
        .scan()
        .table_name(table)
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default();
    items
        .iter()
        .map(|item| {
            let text = |name: &str| match &item[name] {
                aws_sdk_dynamodb::types::AttributeValue::S(s) | aws_sdk_dynamodb::types::AttributeValue::N(s) => {
                    s.clone()
                }
                other => panic!("{name} is {other:?}"),
            };
            (text("reservation_id"), (text("status"), text("version")))
        })
        .collect()
}

/// What the reservations' events leave in the ledger.
fn expected(created: &[String], cancelled: &BTreeSet<String>) -> BTreeMap<String, (String, String)> {
    created
        .iter()
        .map(|id| {
            let state = if cancelled.contains(id) {
                ("CANCELLED", "2")
            } else {
                ("CONFIRMED", "1")
            };
            (id.clone(), (state.0.to_owned(), state.1.to_owned()))
        })
        .collect()
}

/// The kit's batch metrics in a function's output, summed: (applied, duplicates, gaps, dead-lettered).
fn metrics(log: &Path) -> (f64, f64, f64, f64) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut sums = (0.0, 0.0, 0.0, 0.0);
    for line in text.lines().filter(|l| l.contains("\"_aws\"")) {
        let doc: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Namespace"], "BookingLedger");
        assert_eq!(doc["Function"], "booking-ledger");
        let value = |name: &str| doc[name].as_f64().unwrap_or_default();
        sums.0 += value("EventsApplied");
        sums.1 += value("DuplicatesSkipped");
        sums.2 += value("Gaps");
        sums.3 += value("DeadLettered");
    }
    sums
}

async fn traffic(stack: &TestStack) -> (TestApi, Vec<String>, BTreeSet<String>) {
    let api = stack.spawn_api().await;
    let (created, cancelled) = api
        .reserve_and_cancel_every_third(&reqwest::Client::new(), "ledger", 6)
        .await;
    (api, created, cancelled)
}

#[tokio::test]
async fn on_kinesis_the_ledger_in_its_own_process_holds_each_reservations_latest_version_once() {
    let stack = TestStack::start().await;
    let (_api, created, cancelled) = traffic(&stack).await;
    stack.relay_mapping().await.drain().await.unwrap();
    let (table, environment) = ledger(&stack, settings::EventBus::Kinesis).await;
    let dir = stack.dead_letter_dir();
    let stream = stack.name("EVENTS_STREAM");
    for (reading, applied, duplicates) in [("ledger", 8.0, 0.0), ("ledger-again", 0.0, 8.0)] {
        let mut mapping = outside::on_kinesis(&stack.sdk, &stream, reading, &binary(), &environment, &dir)
            .await
            .unwrap();
        let drained = mapping.drain().await.unwrap();
        assert_eq!((drained.function_errors, drained.partial_failures), (0, 0), "{reading}");
        let (log, _, _) = outside::files(&dir, reading);
        assert_eq!(
            metrics(&log),
            (applied, duplicates, 0.0, 0.0),
            "{reading}: {}",
            log.display()
        );
        assert!(
            !Path::new(&environment["DEAD_LETTER_FILE"]).exists(),
            "{reading}: nothing dead-lettered"
        );
        assert_eq!(
            entries(&stack, &table).await,
            expected(&created, &cancelled),
            "{reading}"
        );
    }
}

#[tokio::test]
async fn on_kafka_the_ledger_in_its_own_process_holds_each_reservations_latest_version_once() {
    let stack = TestStack::start().await;
    let topic = TestTopic::create(3).await;
    let (_api, created, cancelled) = traffic(&stack).await;
    stack.relay_mapping_to_kafka(&topic).await.drain().await.unwrap();
    let (table, environment) = ledger(&stack, settings::EventBus::Kafka).await;
    let dir = stack.dead_letter_dir();
    for (reading, applied, duplicates) in [("ledger", 8.0, 0.0), ("ledger-again", 0.0, 8.0)] {
        let mut mapping = outside::on_kafka(&topic.config, reading, &binary(), &environment, &dir)
            .await
            .unwrap();
        let drained = mapping.drain().await.unwrap();
        assert_eq!((drained.function_errors, drained.partial_failures), (0, 0), "{reading}");
        let (log, _, _) = outside::files(&dir, reading);
        assert_eq!(
            metrics(&log),
            (applied, duplicates, 0.0, 0.0),
            "{reading}: {}",
            log.display()
        );
        assert_eq!(
            entries(&stack, &table).await,
            expected(&created, &cancelled),
            "{reading}"
        );
    }
}

#[test]
fn the_ledgers_template_gives_the_local_stack_its_table_and_environment() {
    let ledger = template();
    assert_eq!(ledger.name, "LedgerFunction");
    assert_eq!(ledger.tables.keys().collect::<Vec<_>>(), ["LedgerTable"]);
    assert_eq!(
        ledger.tables["LedgerTable"].key_schema[0].attribute_name,
        "reservation_id"
    );
    assert_eq!(
        ledger.environment.get("LEDGER_TABLE"),
        Some(&outside::Setting::Table("LedgerTable".into()))
    );
    assert_eq!(
        ledger.environment.get("METRICS_NAMESPACE"),
        Some(&outside::Setting::Value("BookingLedger".into()))
    );
}
