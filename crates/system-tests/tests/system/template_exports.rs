//! What template.yaml gives a consumer stack: the bus exported under one prefix, as CloudFormation
//! exports and SSM parameters with the same values, the published schema, and other accounts'
//! read access (the stream's resource policy and a key they can decrypt with). Static.

use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use test_support::template::{Deploy, KAFKA, source as template, to_json};

/// The stack's exports, by name, with their values.
fn exports(stack: &Value) -> BTreeMap<String, Value> {
    stack["Outputs"]
        .as_object()
        .unwrap()
        .values()
        .filter(|output| output.get("Export").is_some())
        .map(|output| {
            let name = output["Export"]["Name"].as_str().expect("an export's name is known");
            (name.to_owned(), output["Value"].clone())
        })
        .collect()
}

/// The stack's SSM parameters, by name, with their values.
fn parameters(stack: &Value) -> BTreeMap<String, Value> {
    resources_of_type(stack, "AWS::SSM::Parameter")
        .into_values()
        .map(|p| {
            let name = p["Properties"]["Name"].as_str().expect("a parameter's name is known");
            (name.to_owned(), p["Properties"]["Value"].clone())
        })
        .collect()
}

fn resources_of_type(stack: &Value, kind: &str) -> BTreeMap<String, Value> {
    stack["Resources"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"] == kind)
        .map(|(id, r)| (id.clone(), r.clone()))
        .collect()
}

fn stack(parameters: &[(&str, &str)]) -> Value {
    to_json(&Deploy::new(&template(), parameters).stack())
}

/// Each export has its SSM parameter, with the same value.
fn assert_exported_both_ways(stack: &Value, prefix: &str, expected: &[(&str, &str)]) {
    let exports = exports(stack);
    let parameters = parameters(stack);
    let names: BTreeSet<String> = expected
        .iter()
        .map(|(export, _)| format!("{prefix}-{export}"))
        .collect();
    assert_eq!(exports.keys().cloned().collect::<BTreeSet<_>>(), names);
    for (export, parameter) in expected {
        let exported = &exports[&format!("{prefix}-{export}")];
        let path = format!("/{prefix}/{parameter}");
        let stored = parameters
            .get(&path)
            .unwrap_or_else(|| panic!("{export} has no SSM parameter {path}"));
        if *export == "EventsSchemaParameter" {
            // The export names the parameter that holds the schema.
            assert_eq!(exported, &json!({ "!Ref": "EventsSchemaParameter" }));
        } else {
            assert_eq!(exported, stored, "{export} and {path} hold the same value");
        }
    }
    assert!(parameters.keys().all(|name| name.starts_with(&format!("/{prefix}/"))));
}

#[test]
fn a_kinesis_stack_exports_its_stream_under_its_name_or_the_prefix_given() {
    let expected = [
        ("EventBus", "events/bus"),
        ("EventsStreamArn", "events/stream-arn"),
        ("EventsStreamName", "events/stream-name"),
        ("NotificationsTopicArn", "notifications/topic-arn"),
        ("EventsSchemaParameter", "events/schema"),
    ];
    let default = stack(&[]);
    assert_exported_both_ways(&default, "reservations", &expected);
    assert_eq!(exports(&default)["reservations-EventBus"], "kinesis");
    assert_eq!(
        exports(&default)["reservations-EventsStreamArn"],
        json!({ "!GetAtt": "EventsStream.Arn" })
    );
    assert_eq!(default["Outputs"]["ExportPrefix"]["Value"], "reservations");

    let prefixed = stack(&[("ExportPrefix", "bookings-prod")]);
    assert_exported_both_ways(&prefixed, "bookings-prod", &expected);
}

#[test]
fn a_kafka_stack_exports_the_cluster_the_topic_and_the_brokers_each_alone() {
    let kafka = stack(&KAFKA);
    assert_exported_both_ways(
        &kafka,
        "reservations",
        &[
            ("EventBus", "events/bus"),
            ("KafkaClusterArn", "events/kafka-cluster-arn"),
            ("EventsTopic", "events/kafka-topic"),
            ("KafkaBootstrapBrokers", "events/kafka-bootstrap-brokers"),
            ("NotificationsTopicArn", "notifications/topic-arn"),
            ("EventsSchemaParameter", "events/schema"),
        ],
    );
    let exported = exports(&kafka);
    let given = |name: &str| KAFKA.iter().find(|(n, _)| *n == name).unwrap().1;
    assert_eq!(exported["reservations-EventBus"], "kafka");
    assert_eq!(exported["reservations-EventsTopic"], "reservation-events");
    assert_eq!(
        exported["reservations-KafkaBootstrapBrokers"],
        given("KafkaBootstrapServers")
    );
    assert_eq!(exported["reservations-KafkaClusterArn"], given("KafkaClusterArn"));
}

#[test]
fn the_schema_parameter_is_the_published_contract_and_fits_a_standard_parameter() {
    let stack = stack(&[]);
    let value = parameters(&stack)["/reservations/events/schema"]
        .as_str()
        .unwrap()
        .to_owned();
    let published: Value = serde_json::from_str(&value).expect("the parameter holds JSON");
    assert_eq!(published, test_support::contract::current_schema());
    // A standard SSM parameter holds 4 KB; past that the template needs the advanced tier.
    assert!(value.len() <= 4096, "the schema is {} bytes", value.len());
}

#[test]
fn other_accounts_may_read_the_stream_and_subscribe_and_nothing_else() {
    // By default the stream is this account's alone, with the AWS managed key.
    let alone = stack(&[]);
    assert!(resources_of_type(&alone, "AWS::Kinesis::ResourcePolicy").is_empty());
    assert!(resources_of_type(&alone, "AWS::KMS::Key").is_empty());
    assert!(resources_of_type(&alone, "AWS::SNS::TopicPolicy").is_empty());
    assert_eq!(
        alone["Resources"]["EventsStream"]["Properties"]["StreamEncryption"]["KeyId"],
        "alias/aws/kinesis"
    );

    let template = template();
    let accounts = ("ConsumerAccountIds", "111111111111,222222222222");
    assert_eq!(
        Deploy::new(&template, &[accounts]).refusals(),
        [
            "ConsumerAccountIds on Kinesis needs StreamEncryptionKey CustomerManaged; another account cannot decrypt with alias/aws/kinesis."
        ]
    );

    let shared = stack(&[accounts, ("StreamEncryptionKey", "CustomerManaged")]);
    let principals = json!({ "AWS": ["111111111111", "222222222222"] });
    let policy = &shared["Resources"]["EventsStreamPolicy"]["Properties"];
    assert_eq!(policy["ResourceArn"], json!({ "!GetAtt": "EventsStream.Arn" }));
    let statements = policy["ResourcePolicy"]["Statement"].as_array().unwrap();
    assert_eq!(statements.len(), 1);
    assert_eq!(statements[0]["Principal"], principals);
    assert_eq!(
        statements[0]["Action"],
        json!([
            "kinesis:DescribeStream",
            "kinesis:DescribeStreamSummary",
            "kinesis:GetRecords",
            "kinesis:GetShardIterator",
            "kinesis:ListShards"
        ]),
        "read only: no writes, no consumer registration"
    );

    let key = &shared["Resources"]["EventsStreamKey"]["Properties"];
    assert_eq!(key["EnableKeyRotation"], true);
    let via_kinesis = json!({ "StringEquals": { "kms:ViaService": "kinesis.eu-west-1.amazonaws.com" } });
    let theirs: Vec<&Value> = key["KeyPolicy"]["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["Principal"] == principals)
        .collect();
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0]["Action"], "kms:Decrypt");
    assert_eq!(theirs[0]["Condition"], via_kinesis);
    assert_eq!(
        shared["Resources"]["EventsStream"]["Properties"]["StreamEncryption"]["KeyId"],
        json!({ "!GetAtt": "EventsStreamKey.Arn" })
    );
    assert_eq!(
        exports(&shared)["reservations-EventsStreamKeyArn"],
        json!({ "!GetAtt": "EventsStreamKey.Arn" })
    );

    let topic = &shared["Resources"]["NotificationsTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"];
    assert_eq!(topic[0]["Principal"], principals);
    assert_eq!(topic[0]["Action"], "sns:Subscribe");

    // On Kafka there is no stream to share; the topic of notifications is shared all the same.
    let kafka: Vec<(&str, &str)> = KAFKA.iter().copied().chain([accounts]).collect();
    let kafka = stack(&kafka);
    assert!(resources_of_type(&kafka, "AWS::Kinesis::ResourcePolicy").is_empty());
    assert!(resources_of_type(&kafka, "AWS::KMS::Key").is_empty());
    assert_eq!(resources_of_type(&kafka, "AWS::SNS::TopicPolicy").len(), 1);
}
