//! `GlobalTables` in template.yaml: Create makes the reservations, outbox, read model and
//! notifications tables DynamoDB global tables with a replica in each named Region, Attach uses
//! those replicas from another Region's stack, and either way every function, policy, mapping,
//! alarm and output names the global tables and nothing of a table the stack would own. Rendered with
//! `test_support::template` for each case (Deploy deploys to eu-west-1).

use serde_yaml_ng::Value;
use test_support::template::{Deploy, REGION, source as template, to_json as json};

const NAMES: [(&str, &str); 4] = [
    ("GlobalReservationsTableName", "bookings-reservations"),
    ("GlobalOutboxTableName", "bookings-outbox"),
    ("GlobalReadModelTableName", "bookings-guests"),
    ("GlobalNotificationsTableName", "bookings-notifications"),
];
/// Each table a single-Region stack owns, its global table, the functions' variable and the
/// output that name it, and its name in these tests.
const TABLES: [(&str, &str, &str, &str, &str); 4] = [
    (
        "ReservationsTable",
        "ReservationsGlobalTable",
        "RESERVATIONS_TABLE",
        "ReservationsTableName",
        "bookings-reservations",
    ),
    (
        "OutboxTable",
        "OutboxGlobalTable",
        "OUTBOX_TABLE",
        "OutboxTableName",
        "bookings-outbox",
    ),
    (
        "ReadModelTable",
        "ReadModelGlobalTable",
        "READ_MODEL_TABLE",
        "ReadModelTableName",
        "bookings-guests",
    ),
    (
        "NotificationsTable",
        "NotificationsGlobalTable",
        "NOTIFICATIONS_TABLE",
        "NotificationsTableName",
        "bookings-notifications",
    ),
];
const REPLICA_STREAM: &str =
    "arn:aws:dynamodb:eu-west-1:123456789012:table/bookings-outbox/stream/2026-12-04T10:00:00.000";

fn create(replicas: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    [("GlobalTables", "Create")]
        .into_iter()
        .chain(NAMES)
        .chain(replicas.iter().copied())
        .collect()
}

fn attach() -> Vec<(&'static str, &'static str)> {
    [
        ("GlobalTables", "Attach"),
        ("PrimaryRegion", "us-east-1"),
        ("OutboxReplicaStreamArn", REPLICA_STREAM),
    ]
    .into_iter()
    .chain(NAMES)
    .collect()
}

/// The stack as JSON text, to look for what must not be in it.
fn text(stack: &Value) -> String {
    json(stack).to_string()
}

fn environment(stack: &Value) -> serde_json::Value {
    json(&stack["Globals"]["Function"]["Environment"]["Variables"])
}

/// What the stack names the tables by, wherever it names them: the functions' environment, the
/// outputs and every DynamoDB alarm's dimension.
fn assert_names_the_global_tables(stack: &Value) {
    let environment = environment(stack);
    for (_, _, var, output, name) in TABLES {
        assert_eq!(environment[var], name);
        assert_eq!(json(&stack["Outputs"][output]["Value"]), name);
    }
    let names: Vec<&str> = TABLES.iter().map(|t| t.4).collect();
    let mut watched = 0;
    for (id, resource) in stack["Resources"].as_mapping().unwrap() {
        let alarm = json(resource);
        for query in alarm["Properties"]["Metrics"].as_array().into_iter().flatten() {
            let metric = &query["MetricStat"]["Metric"];
            if metric["Namespace"] != "AWS/DynamoDB" {
                continue;
            }
            let table = &metric["Dimensions"][0]["Value"];
            let id = id.as_str().unwrap();
            if TABLES.iter().any(|t| id.starts_with(t.0)) {
                assert!(names.iter().any(|name| table == name), "{id} watches {table}");
                watched += 1;
            }
        }
    }
    assert_eq!(watched, 40, "four tables: 2 throttle and 8 system error metrics each");
    // Nothing refers to the tables a single-Region stack owns.
    let text = text(stack);
    for (own, ..) in TABLES {
        for reference in [format!("\"{own}\""), format!("{own}.")] {
            assert!(!text.contains(&reference), "the stack still refers to {reference}");
        }
    }
}

/// The relay's mapping and its permission read `stream`.
fn assert_relay_reads(stack: &Value, stream: serde_json::Value) {
    let mapping = json(&stack["Resources"]["RelayEventSourceMapping"]["Properties"]);
    assert_eq!(mapping["EventSourceArn"], stream);
    let relay = json(&stack["Resources"]["RelayFunctionRole"]["Properties"]["Policies"]);
    let read = relay[0]["PolicyDocument"]["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Sid"] == "ReadOutboxStream")
        .expect("the relay's stream permission")
        .clone();
    assert_eq!(read["Resource"], stream);
}

#[test]
fn global_tables_create_makes_both_tables_global_with_a_replica_in_each_region() {
    let template = template();
    for (replicas, regions) in [
        // A global table of one Region for now: a Region named later is added, not replaced.
        (&[][..], &[REGION][..]),
        (&[("ReplicaRegion", "us-east-1")][..], &[REGION, "us-east-1"][..]),
        (
            &[
                ("ReplicaRegion", "us-east-1"),
                ("SecondReplicaRegion", "ap-southeast-2"),
            ][..],
            &[REGION, "us-east-1", "ap-southeast-2"][..],
        ),
    ] {
        let stack = Deploy::new(&template, &create(replicas)).stack();
        let resources = &stack["Resources"];
        for (own, global, _, _, name) in TABLES {
            assert!(resources.get(own).is_none(), "{own} is not created");
            let table = &resources[global];
            assert_eq!(table["Type"].as_str(), Some("AWS::DynamoDB::GlobalTable"));
            assert_eq!(
                table["DeletionPolicy"].as_str(),
                Some("RetainExceptOnCreate"),
                "{global}"
            );
            assert_eq!(table["UpdateReplacePolicy"].as_str(), Some("Retain"), "{global}");
            let properties = json(&table["Properties"]);
            assert_eq!(properties["TableName"], name);
            // Replication needs both images; the relay reads NewImage either way.
            assert_eq!(
                properties["StreamSpecification"]["StreamViewType"],
                "NEW_AND_OLD_IMAGES"
            );
            // The same keys, indexes, TTL and encryption as the single-Region table.
            let single = json(&template["Resources"][own]["Properties"]);
            for key in [
                "BillingMode",
                "AttributeDefinitions",
                "KeySchema",
                "GlobalSecondaryIndexes",
                "TimeToLiveSpecification",
                "SSESpecification",
            ] {
                assert_eq!(properties[key], single[key], "{global} {key}");
            }
            let replicas = properties["Replicas"].as_array().unwrap();
            let in_regions: Vec<&str> = replicas.iter().map(|r| r["Region"].as_str().unwrap()).collect();
            assert_eq!(in_regions, regions, "{global}");
            for replica in replicas {
                assert_eq!(
                    replica["PointInTimeRecoverySpecification"],
                    serde_json::json!({ "PointInTimeRecoveryEnabled": true }),
                    "{global} in {}",
                    replica["Region"]
                );
                assert_eq!(replica["DeletionProtectionEnabled"], "false");
            }
        }
        assert_names_the_global_tables(&stack);
        assert_relay_reads(&stack, serde_json::json!({ "!GetAtt": "OutboxGlobalTable.StreamArn" }));
        // The creating Region is the primary unless told otherwise, and the only one that
        // creates slots: it knows every Region a new slot may be at home in.
        assert_eq!(environment(&stack)["PRIMARY_REGION"], REGION);
        let listed = environment(&stack)["REGIONS"].as_str().unwrap().to_owned();
        let vars = std::collections::HashMap::from([("REGIONS".to_owned(), listed)]);
        assert_eq!(
            settings::Regions::single(REGION).deployment_from_vars(&vars),
            regions,
            "the Regions the primary lets a new slot be at home in"
        );
    }
}

#[test]
fn global_tables_attach_uses_this_regions_replicas_and_their_stream_and_creates_no_table() {
    let template = template();
    let stack = Deploy::new(&template, &attach()).stack();
    for (id, resource) in stack["Resources"].as_mapping().unwrap() {
        let kind = resource["Type"].as_str().unwrap();
        let id = id.as_str().unwrap();
        assert!(
            !(kind.starts_with("AWS::DynamoDB::") && TABLES.iter().any(|t| id == t.0 || id == t.1)),
            "{id} ({kind}) is the primary stack's to create"
        );
    }
    assert_names_the_global_tables(&stack);
    assert_relay_reads(&stack, serde_json::json!(REPLICA_STREAM));
    assert_eq!(environment(&stack)["PRIMARY_REGION"], "us-east-1");
    // The functions' permissions name this Region's replicas.
    let text = text(&stack);
    for (.., table) in TABLES {
        let arn = format!("arn:aws:dynamodb:{REGION}:123456789012:table/{table}");
        assert!(text.contains(&arn), "no permission names {arn}");
    }
}

#[test]
fn global_tables_without_their_names_regions_or_stream_are_refused_with_what_to_set() {
    let template = template();
    let refusals = |overrides: &[(&str, &str)]| Deploy::new(&template, overrides).refusals();
    assert_eq!(
        refusals(&[("GlobalTables", "Create")]),
        [
            "GlobalTables Create or Attach needs GlobalReservationsTableName, the same in every Region.",
            "GlobalTables Create or Attach needs GlobalOutboxTableName, the same in every Region.",
            "GlobalTables Create or Attach needs GlobalReadModelTableName, the same in every Region.",
            "GlobalTables Create or Attach needs GlobalNotificationsTableName, the same in every Region."
        ]
    );
    assert_eq!(
        refusals(&[("GlobalTables", "Attach"), NAMES[0], NAMES[1], NAMES[2], NAMES[3]]),
        [
            "GlobalTables Attach needs PrimaryRegion, the Region whose stack created the tables.",
            "GlobalTables Attach needs OutboxReplicaStreamArn, the stream of this Region's outbox replica."
        ]
    );
    assert!(refusals(&create(&[])).is_empty());
    assert!(refusals(&attach()).is_empty());
    // The names and Regions mean nothing to a stack that owns its tables.
    assert!(refusals(&[]).is_empty());
}
