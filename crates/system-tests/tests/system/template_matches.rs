//! template.yaml is the product as much as the code: these tests keep it equal to the workspace
//! (one function resource per Lambda crate), to the local stack (infra/resources.json), to the
//! API's route table, to the relay's filter and to the metrics the code emits, and check each
//! function's environment is one its typed config accepts. Static: no engine needed.

use serde_yaml_ng::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use test_support::template::{Deploy, KAFKA, STACK_NAME, joined_text, source as template, to_json as json};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn resources_of_type<'a>(template: &'a Value, kind: &str) -> BTreeMap<String, &'a Value> {
    template["Resources"]
        .as_mapping()
        .expect("Resources")
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some(kind))
        .map(|(id, r)| (id.as_str().unwrap().to_owned(), r))
        .collect()
}

#[test]
fn every_lambda_crate_has_a_function_resource_and_every_function_a_crate() {
    let mut binaries = BTreeSet::new();
    for entry in std::fs::read_dir(root().join("functions")).unwrap() {
        let manifest = std::fs::read_to_string(entry.unwrap().path().join("Cargo.toml")).unwrap();
        let manifest: toml_lite::Manifest = toml_lite::parse(&manifest);
        binaries.extend(manifest.bins);
    }
    let template = template();
    let functions: BTreeSet<String> = resources_of_type(&template, "AWS::Serverless::Function")
        .values()
        .map(|f| {
            assert_eq!(f["Metadata"]["BuildMethod"].as_str(), Some("rust-cargolambda"));
            f["Metadata"]["BuildProperties"]["Binary"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(!binaries.is_empty());
    assert_eq!(functions, binaries);
    let globals = &template["Globals"]["Function"];
    assert_eq!(globals["Runtime"].as_str(), Some("provided.al2023"));
    // arm64 unless the deploy says otherwise (LocalStack on an x86_64 machine runs x86_64).
    assert_eq!(
        json(&globals["Architectures"]),
        serde_json::json!([{ "!Ref": "Architecture" }])
    );
    assert_eq!(
        template["Parameters"]["Architecture"]["Default"].as_str(),
        Some("arm64")
    );
}

#[test]
fn the_local_stack_does_not_drift_from_the_template() {
    let local: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("infra/resources.json")).unwrap()).unwrap();
    let template = template();
    let tables = resources_of_type(&template, "AWS::DynamoDB::Table");
    let local_tables = local["Tables"].as_array().unwrap();
    let local_ids: BTreeSet<&str> = local_tables.iter().map(|t| t["LogicalId"].as_str().unwrap()).collect();
    let template_ids: BTreeSet<&str> = tables.keys().map(String::as_str).collect();
    assert_eq!(local_ids, template_ids, "the same tables in both");
    for table in local_tables {
        let id = table["LogicalId"].as_str().unwrap();
        let deployed = json(&tables[id]["Properties"]);
        for property in [
            "BillingMode",
            "AttributeDefinitions",
            "KeySchema",
            "GlobalSecondaryIndexes",
            "StreamSpecification",
            "TimeToLiveSpecification",
        ] {
            assert_eq!(
                table["Properties"].get(property),
                deployed.get(property),
                "{id}.{property} differs between infra/resources.json and template.yaml"
            );
        }
    }
    let streams = resources_of_type(&template, "AWS::Kinesis::Stream");
    for stream in local["Streams"].as_array().unwrap() {
        let id = stream["LogicalId"].as_str().unwrap();
        assert!(streams.contains_key(id), "stream {id} is not in the template");
        let retention = &template["Parameters"]["StreamRetentionHours"]["Default"];
        assert_eq!(
            stream["Properties"]["RetentionPeriodHours"].as_u64(),
            retention.as_u64()
        );
    }
}

#[test]
fn the_http_api_routes_are_the_handlers_routes() {
    let template = template();
    let routes: BTreeSet<String> = resources_of_type(&template, "AWS::ApiGatewayV2::Route")
        .values()
        .map(|r| r["Properties"]["RouteKey"].as_str().unwrap().to_owned())
        .filter(|key| key != "$default")
        .collect();
    let handled: BTreeSet<String> = api::ROUTES.iter().map(|(m, p, _)| format!("{m} {p}")).collect();
    assert_eq!(routes, handled);
}

/// RelayMode switches the API's marking, the stream relay's mapping and the poller's schedule
/// together, so a deployment never has both relays on or neither.
#[test]
fn relay_mode_switches_the_marking_the_stream_mapping_and_the_schedule_together() {
    let template = template();
    let parameter = &template["Parameters"]["RelayMode"];
    assert_eq!(parameter["Default"].as_str(), Some("stream"));
    let allowed: Vec<&str> = parameter["AllowedValues"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for mode in &allowed {
        mode.parse::<adapters::RelayMode>()
            .unwrap_or_else(|e| panic!("the API would reject RelayMode {mode}: {e}"));
    }
    let resources = &template["Resources"];
    let api_env = &resources["ApiFunction"]["Properties"]["Environment"]["Variables"]["RELAY_MODE"];
    assert_eq!(json(api_env), serde_json::json!({"!Ref": "RelayMode"}));
    let enabled = &resources["RelayEventSourceMapping"]["Properties"]["Enabled"];
    assert_eq!(json(enabled), serde_json::json!({"!If": ["PollingRelay", false, true]}));
    let schedule = &resources["PollerFunction"]["Properties"]["Events"]["EveryMinute"]["Properties"];
    assert_eq!(
        json(&schedule["State"]),
        serde_json::json!({"!If": ["PollingRelay", "ENABLED", "DISABLED"]})
    );
    assert_eq!(
        json(&template["Conditions"]["PollingRelay"]),
        serde_json::json!({"!Equals": [{"!Ref": "RelayMode"}, "polling"]})
    );
}

/// The metric names a function emits, from the code that emits them.
fn emitted_metrics(function: &str) -> BTreeSet<String> {
    let sets = match function {
        "poller" => {
            let poll = relay::PollStats {
                oldest_pending_age: Some(std::time::Duration::ZERO),
                ..Default::default()
            };
            vec![relay::RunStats::default().metrics(), poll.metrics()]
        }
        "notifier" => vec![adapters::dynamodb::consumers::republished_after_window_metrics()],
        "relay" => vec![relay::handler::RelayStats::default().metrics(time::OffsetDateTime::UNIX_EPOCH)],
        other => panic!("no alarm on {other}'s metrics was expected; add its metric sets here"),
    };
    sets.iter()
        .flat_map(|set| {
            let line: serde_json::Value = serde_json::from_str(&set.to_line(time::OffsetDateTime::UNIX_EPOCH)).unwrap();
            line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["Name"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// An alarm on a metric nobody emits never fires: every alarm in the product's namespace watches a
/// metric its function emits, under the dimension the code writes.
#[test]
fn every_alarm_on_a_product_metric_watches_a_metric_the_code_emits() {
    let template = template();
    let alarms = resources_of_type(&template, "AWS::CloudWatch::Alarm");
    let mut checked = 0;
    for (id, alarm) in &alarms {
        let properties = &alarm["Properties"];
        if properties["Namespace"].as_str() != Some(telemetry::NAMESPACE) {
            continue;
        }
        let dimensions = json(&properties["Dimensions"]);
        let function = dimensions[0]["Value"]
            .as_str()
            .unwrap_or_else(|| panic!("{id}: {dimensions}"));
        assert_eq!(
            (dimensions[0]["Name"].as_str(), dimensions.as_array().unwrap().len()),
            (Some("Function"), 1),
            "{id}"
        );
        let metric = properties["MetricName"].as_str().unwrap();
        assert!(
            emitted_metrics(function).contains(metric),
            "{id} watches {metric} of {function}, which the code does not emit"
        );
        checked += 1;
    }
    assert!(checked > 0, "no alarm on the product's own metrics");
}

/// The poller's alarms exist only in RelayMode polling (in stream mode it runs only for a sweep,
/// and "not invoked" would always fire), and there is one for each way it can stop publishing.
#[test]
fn the_poller_alarms_exist_in_polling_mode_only_and_cover_errors_throttles_failed_polls_backlog_and_silence() {
    let template = template();
    let poller_alarms: BTreeMap<String, &Value> = resources_of_type(&template, "AWS::CloudWatch::Alarm")
        .into_iter()
        .filter(|(_, alarm)| {
            let dimension = json(&alarm["Properties"]["Dimensions"][0]["Value"]);
            dimension == serde_json::json!({"!Ref": "PollerFunction"}) || dimension == "poller"
        })
        .collect();
    let watched: BTreeSet<&str> = poller_alarms
        .values()
        .map(|alarm| alarm["Properties"]["MetricName"].as_str().unwrap())
        .collect();
    assert_eq!(
        watched,
        BTreeSet::from([
            "Errors",
            "FailedPolls",
            "Invocations",
            "OldestPendingAge",
            "PublishRefused",
            "Throttles"
        ])
    );
    for (id, alarm) in &poller_alarms {
        let refused = alarm["Properties"]["MetricName"].as_str() == Some("PublishRefused");
        // Only the Kafka bus can refuse a publish.
        let condition = if refused { "PollingKafkaBus" } else { "PollingRelay" };
        assert_eq!(alarm["Condition"].as_str(), Some(condition), "{id}");
    }
    assert_eq!(
        json(&template["Conditions"]["PollingKafkaBus"]),
        serde_json::json!({"!And": [{"!Condition": "KafkaBus"}, {"!Condition": "PollingRelay"}]})
    );
    let silence = poller_alarms
        .values()
        .find(|a| a["Properties"]["MetricName"].as_str() == Some("Invocations"))
        .unwrap();
    assert_eq!(silence["Properties"]["TreatMissingData"].as_str(), Some("breaching"));
}

#[test]
fn the_relay_mapping_filters_exactly_like_the_relay() {
    let template = template();
    // In the primary Region and in another (Deploy deploys to eu-west-1).
    for (primary, parameters) in [
        ("eu-west-1", &[][..]),
        ("us-east-1", &[("PrimaryRegion", "us-east-1")][..]),
    ] {
        let stack = Deploy::new(&template, parameters).stack();
        let filters = &stack["Resources"]["RelayEventSourceMapping"]["Properties"]["FilterCriteria"]["Filters"];
        let deployed: Vec<serde_json::Value> = filters
            .as_sequence()
            .unwrap()
            .iter()
            .map(|filter| serde_json::from_str(filter["Pattern"].as_str().unwrap()).unwrap())
            .collect();
        let regions = settings::Regions {
            here: "eu-west-1".into(),
            primary: primary.into(),
        };
        let code: Vec<serde_json::Value> = relay::outbox_insert_filters(&regions)
            .iter()
            .map(|filter| serde_json::from_str(filter).unwrap())
            .collect();
        assert_eq!(deployed, code, "primary {primary}");
    }
    let mapping = &template["Resources"]["RelayEventSourceMapping"]["Properties"];
    assert_eq!(
        json(&mapping["FunctionResponseTypes"]),
        serde_json::json!(["ReportBatchItemFailures"])
    );
    assert_eq!(
        mapping["MaximumRetryAttempts"].as_i64(),
        Some(-1),
        "ADR 0002: the relay retries until it succeeds"
    );
    // And the local runner uses the same settings.
    let local = devstack::pipeline::relay_mapping_config(&settings::Regions::single("eu-west-1"));
    assert_eq!(local.batch_size as u64, mapping["BatchSize"].as_u64().unwrap());
    assert_eq!(local.maximum_retry_attempts, None);
    for consumer in consumers::ALL.iter().map(|c| c.logical_id("EventSourceMapping")) {
        let mapping = &template["Resources"][consumer.as_str()]["Properties"];
        assert_eq!(
            mapping["BisectBatchOnFunctionError"].as_bool(),
            Some(true),
            "{consumer}"
        );
        assert!(
            matches!(
                mapping["DestinationConfig"]["OnFailure"]["Destination"],
                Value::Tagged(_)
            ),
            "{consumer}"
        );
    }
}

/// Each function's environment (Globals plus its own) in the stack each bus makes, with values
/// only CloudFormation knows replaced by a placeholder, is accepted by that function's config
/// parser.
#[test]
fn every_function_environment_satisfies_its_typed_config_on_either_bus() {
    let template = template();
    for parameters in [&[][..], &KAFKA[..]] {
        let stack = Deploy::new(&template, parameters).stack();
        let globals = stack["Globals"]["Function"]["Environment"]["Variables"]
            .as_mapping()
            .unwrap();
        let functions = resources_of_type(&stack, "AWS::Serverless::Function");
        for (id, function) in functions {
            let mut vars: HashMap<String, String> = HashMap::new();
            let own = function["Properties"]["Environment"]["Variables"].as_mapping();
            for (name, value) in globals.iter().chain(own.into_iter().flatten()) {
                let name = name.as_str().unwrap();
                let value = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => format!("resolved-{name}"),
                };
                vars.insert(name.to_owned(), value);
            }
            let binary = function["Metadata"]["BuildProperties"]["Binary"].as_str().unwrap();
            let outcome = match binary {
                "reservations-api" => reservations_api::ApiConfig::from_vars(&vars)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                "reservations-relay" => relay::RelayConfig::from_vars(&vars)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                "reservations-poller" => relay::PollerConfig::from_vars(&vars)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                other => match consumers::ALL.iter().find(|c| c.binary() == other) {
                    // A consumer's Lambda reads its configuration, then builds the consumer.
                    Some(consumer) => consumers::ConsumerConfig::from_vars(&vars, consumer.table)
                        .map_err(|e| e.to_string())
                        .and_then(|_| {
                            let sdk = offline_sdk();
                            let wiring =
                                consumers::Wiring::new(&sdk, &vars, consumers::Publishes::Yes, Default::default());
                            consumer.build(&wiring).map(|_| ()).map_err(|e| e.to_string())
                        }),
                    None => panic!("{id}: no config check for {other}; add one"),
                },
            };
            outcome.unwrap_or_else(|e| panic!("{id} ({binary}) would not start with {parameters:?}: {e}"));
        }
    }
}

#[test]
fn the_templates_jwt_defaults_are_the_apis() {
    let template = template();
    let default = |name: &str| template["Parameters"][name]["Default"].as_str().map(str::to_owned);
    assert_eq!(
        default("JwtGuestClaim").as_deref(),
        Some(api::auth::DEFAULT_GUEST_CLAIM)
    );
    assert_eq!(
        default("JwtAdminScope").as_deref(),
        Some(api::auth::DEFAULT_ADMIN_SCOPE)
    );
    let described = template["Parameters"]["JwtAdminScope"]["Description"].as_str().unwrap();
    assert!(
        described.contains(api::auth::ADMIN_GROUP),
        "JwtAdminScope's description names the admin group"
    );
}

/// Just enough TOML reading for `[[bin]] name = "..."` (and the package name as the default bin).
mod toml_lite {
    pub struct Manifest {
        pub bins: Vec<String>,
    }

    pub fn parse(text: &str) -> Manifest {
        let mut section = String::new();
        let mut package = None;
        let mut bins = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line.to_owned();
                continue;
            }
            if let Some(value) = line.strip_prefix("name = ") {
                let value = value.trim_matches('"').to_owned();
                match section.as_str() {
                    "[package]" => package = Some(value),
                    "[[bin]]" => bins.push(value),
                    _ => {}
                }
            }
        }
        if bins.is_empty() {
            bins.extend(package);
        }
        Manifest { bins }
    }
}

/// The compose file parses and names what the scripts and the template expect.
/// The LocalStack services a resource type needs once SAM has transformed it.
fn localstack_services(resource: &Value) -> Vec<&'static str> {
    let kind = resource["Type"].as_str().unwrap_or_default();
    let mut services = vec![match kind.split("::").nth(1).unwrap_or_default() {
        "Serverless" | "Lambda" => "lambda",
        "DynamoDB" => "dynamodb",
        "Kinesis" => "kinesis",
        "SQS" => "sqs",
        "SNS" => "sns",
        "Logs" => "logs",
        "CloudWatch" => "cloudwatch",
        "ApiGatewayV2" => "apigatewayv2",
        "ApiGateway" => "apigateway",
        "IAM" => "iam",
        "KMS" => "kms",
        "SSM" => "ssm",
        other => panic!("no LocalStack service known for {other}"),
    }];
    // A Schedule event becomes an EventBridge rule.
    let events = resource["Properties"]["Events"].as_mapping().into_iter().flatten();
    if events.map(|(_, e)| e["Type"].as_str()).any(|t| t == Some("Schedule")) {
        services.push("events");
    }
    services
}

#[test]
fn the_docker_kafka_listens_on_loopback_where_the_scripts_look_and_only_when_asked_for() {
    let text = std::fs::read_to_string(root().join("docker-compose.yml")).expect("docker-compose.yml");
    let compose: Value = serde_yaml_ng::from_str(&text).expect("docker-compose.yml parses");
    let kafka = &compose["services"]["kafka"];
    assert_eq!(kafka["ports"][0].as_str(), Some("127.0.0.1:9092:9092"));
    assert_eq!(
        kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"].as_str(),
        Some("PLAINTEXT://127.0.0.1:9092"),
        "clients are sent back to the address they reached"
    );
    assert_eq!(
        kafka["profiles"][0].as_str(),
        Some("kafka"),
        "docker compose up starts LocalStack alone"
    );
}

#[test]
fn localstack_serves_every_service_the_template_needs_in_docker_and_in_host_mode() {
    let text = std::fs::read_to_string(root().join("docker-compose.yml")).expect("docker-compose.yml");
    let compose: Value = serde_yaml_ng::from_str(&text).expect("docker-compose.yml parses");
    let localstack = &compose["services"]["localstack"];
    let image = localstack["image"].as_str().unwrap();
    assert_eq!(
        image, "localstack/localstack:4.14.0",
        "the last community image that starts without an auth token"
    );
    let ports: Vec<&str> = localstack["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(
        ports,
        ["127.0.0.1:4566:4566"],
        "loopback only, the port the scripts use"
    );
    let in_docker: BTreeSet<&str> = localstack["environment"]["SERVICES"]
        .as_str()
        .unwrap()
        .split(',')
        .collect();

    let lib = std::fs::read_to_string(root().join("scripts/lib/localstack.sh")).unwrap();
    let host_line = lib
        .lines()
        .find_map(|l| l.strip_prefix("LOCALSTACK_SERVICES="))
        .expect("LOCALSTACK_SERVICES in scripts/lib/localstack.sh");
    let in_host_mode: BTreeSet<&str> = host_line.split(',').collect();
    assert_eq!(in_docker, in_host_mode, "Docker and host mode serve the same services");

    // What the stack LocalStack community can serve needs: every resource but the HTTP API's
    // (HTTP APIs are a Pro feature: scripts/deploy-localstack.sh deploys ApiEndpoint=RestApi).
    let template = template();
    let needed: BTreeSet<&str> = template["Resources"]
        .as_mapping()
        .unwrap()
        .values()
        .filter(|r| !matches!(r["Condition"].as_str(), Some("UseHttpApi" | "HttpApiJwt")))
        .flat_map(localstack_services)
        // CloudFormation runs the stack, S3 holds the packaged code, IAM and STS the roles,
        // DynamoDB Streams the outbox's stream, KMS the queues' and the stream's keys.
        .chain(["cloudformation", "s3", "iam", "sts", "dynamodbstreams", "kms"])
        .collect();
    assert_eq!(in_host_mode, needed, "exactly the services the template needs");
}

/// The logical id a dimension's value names (`!Ref X`, `!GetAtt X.Name`).
fn dimension_targets(value: &serde_json::Value) -> Vec<String> {
    // An `!If` (a table of this stack's own, or the global one named by a parameter) watches
    // what either branch names.
    if let Some([_, yes, no]) = value.get("!If").and_then(|v| v.as_array()).map(Vec::as_slice) {
        return [dimension_targets(yes), dimension_targets(no)].concat();
    }
    let named = value
        .get("!Ref")
        .or(value.get("!GetAtt"))
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    vec![named.split('.').next().unwrap_or_default().to_owned()]
}

/// Every (namespace, metric, resource) an alarm watches, metric math included.
fn watched_metrics(template: &Value) -> BTreeSet<(String, String, String)> {
    let mut watched = BTreeSet::new();
    for alarm in resources_of_type(template, "AWS::CloudWatch::Alarm").values() {
        let properties = json(&alarm["Properties"]);
        let mut metrics = vec![properties.clone()];
        for query in properties["Metrics"].as_array().into_iter().flatten() {
            metrics.push(query["MetricStat"]["Metric"].clone());
        }
        for metric in metrics {
            let (Some(namespace), Some(name)) = (metric["Namespace"].as_str(), metric["MetricName"].as_str()) else {
                continue;
            };
            for dimension in metric["Dimensions"].as_array().into_iter().flatten() {
                for target in dimension_targets(&dimension["Value"]) {
                    watched.insert((namespace.to_owned(), name.to_owned(), target));
                }
            }
        }
    }
    watched
}

#[test]
fn every_function_table_stream_queue_and_front_door_has_alarms_that_page_and_clear() {
    let template = template();
    for (id, alarm) in resources_of_type(&template, "AWS::CloudWatch::Alarm") {
        let properties = &alarm["Properties"];
        assert!(!properties["AlarmActions"].is_null(), "{id} pages");
        assert_eq!(
            json(&properties["OKActions"]),
            json(&properties["AlarmActions"]),
            "{id} clears its page where it sent it"
        );
    }
    let watched = watched_metrics(&template);
    let expect = |namespace: &str, metric: &str, resource: &str| {
        let key = (namespace.to_owned(), metric.to_owned(), resource.to_owned());
        assert!(watched.contains(&key), "no alarm on {key:?}");
    };
    for function in resources_of_type(&template, "AWS::Serverless::Function").keys() {
        expect("AWS/Lambda", "Errors", function);
        expect("AWS/Lambda", "Throttles", function);
    }
    for table in resources_of_type(&template, "AWS::DynamoDB::Table").keys() {
        expect("AWS/DynamoDB", "ReadThrottleEvents", table);
        expect("AWS/DynamoDB", "WriteThrottleEvents", table);
        expect("AWS/DynamoDB", "SystemErrors", table);
    }
    for stream in resources_of_type(&template, "AWS::Kinesis::Stream").keys() {
        expect("AWS/Kinesis", "WriteProvisionedThroughputExceeded", stream);
    }
    // Dead letters need a person as soon as there is one; a subscriber's queue, when it falls
    // behind.
    for queue in resources_of_type(&template, "AWS::SQS::Queue").keys() {
        if queue.ends_with("DeadLetterQueue") {
            expect("AWS/SQS", "ApproximateNumberOfMessagesVisible", queue);
        } else {
            expect("AWS/SQS", "ApproximateAgeOfOldestMessage", queue);
        }
    }
    for topic in resources_of_type(&template, "AWS::SNS::Topic").keys() {
        expect("AWS/SNS", "NumberOfNotificationsFailed", topic);
    }
    expect("AWS/Lambda", "IteratorAge", "RelayFunction");
    for consumer in consumers::ALL.iter().map(|c| c.logical_id("Function")) {
        expect("AWS/Lambda", "IteratorAge", &consumer);
        // On Kafka, a consumer's lag is its group's offset lag.
        expect("AWS/Lambda", "OffsetLag", &consumer);
    }
    // The front door, whichever it is: server errors and p99 latency.
    expect("AWS/ApiGateway", "5xx", "HttpApi");
    expect("AWS/ApiGateway", "Latency", "HttpApi");
    // A REST API's metrics are per API name and stage.
    expect("AWS/ApiGateway", "5XXError", "RestApiStage");
    expect("AWS/ApiGateway", "Latency", "RestApiStage");
    expect("AWS/Lambda", "Url5xxCount", "ApiFunction");
    expect("AWS/Lambda", "UrlRequestLatency", "ApiFunction");
}

#[test]
fn the_record_of_what_happened_survives_deletion_and_replacement() {
    let template = template();
    let kept = [
        "ReservationsTable",
        "OutboxTable",
        "ReservationsGlobalTable",
        "OutboxGlobalTable",
        "EventsStream",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain(resources_of_type(&template, "AWS::SQS::Queue").into_keys());
    for id in kept {
        let resource = &template["Resources"][id.as_str()];
        assert_eq!(resource["UpdateReplacePolicy"].as_str(), Some("Retain"), "{id}");
        assert_eq!(
            resource["DeletionPolicy"].as_str(),
            Some("RetainExceptOnCreate"),
            "{id}"
        );
    }
    for table in resources_of_type(&template, "AWS::DynamoDB::Table").values() {
        assert_eq!(
            json(&table["Properties"]["PointInTimeRecoverySpecification"]),
            serde_json::json!({ "PointInTimeRecoveryEnabled": true })
        );
    }
}

#[test]
fn with_enhanced_fan_out_each_consumer_reads_through_its_own_registered_consumer() {
    let template = template();
    assert_eq!(
        template["Parameters"]["ConsumerFanOut"]["Default"].as_str(),
        Some("SHARED"),
        "shared throughput costs nothing extra, so it stays the default"
    );
    let registered = resources_of_type(&template, "AWS::Kinesis::StreamConsumer");
    for (function, consumer) in consumers::ALL
        .iter()
        .map(|c| (c.logical_id("Function"), c.logical_id("StreamConsumer")))
    {
        let (function, consumer) = (function.as_str(), consumer.as_str());
        let declared = registered
            .get(consumer)
            .unwrap_or_else(|| panic!("{consumer} is declared"));
        assert_eq!(declared["Condition"].as_str(), Some("EnhancedFanOut"));
        assert_eq!(
            json(&declared["Properties"]["StreamARN"]),
            serde_json::json!({ "!GetAtt": "EventsStream.Arn" })
        );
        let consumer_arn = serde_json::json!({ "!GetAtt": format!("{consumer}.ConsumerARN") });
        // The function's mapping reads through the consumer when it exists, the stream otherwise.
        let mapping = resources_of_type(&template, "AWS::Lambda::EventSourceMapping")
            .into_values()
            .find(|m| json(&m["Properties"]["FunctionName"]) == serde_json::json!({ "!Ref": function }))
            .unwrap_or_else(|| panic!("{function} has a mapping"));
        assert_eq!(
            json(&mapping["Properties"]["EventSourceArn"]),
            serde_json::json!({ "!If": ["EnhancedFanOut", consumer_arn, { "!GetAtt": "EventsStream.Arn" }] })
        );
        // And may subscribe to exactly that consumer, only when it exists.
        let statements = json(&template["Resources"][function]["Properties"]["Policies"][0]["Statement"]);
        let pushed = statements
            .as_array()
            .unwrap()
            .iter()
            .find_map(|s| s.get("!If").filter(|branches| branches[0] == "EnhancedFanOut"))
            .unwrap_or_else(|| panic!("{function} has the enhanced fan-out statement"));
        assert_eq!(pushed[1]["Resource"], consumer_arn);
        assert_eq!(
            pushed[1]["Action"],
            serde_json::json!(["kinesis:SubscribeToShard", "kinesis:DescribeStreamConsumer"])
        );
        assert_eq!(pushed[2], serde_json::json!({ "!Ref": "AWS::NoValue" }));
    }
}

/// Every IAM statement of a stack's resources, as JSON.
fn statements(stack: &Value) -> Vec<serde_json::Value> {
    fn collect(value: &serde_json::Value, found: &mut Vec<serde_json::Value>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::Array(statements)) = map.get("Statement") {
                    found.extend(statements.iter().cloned());
                }
                map.values().for_each(|v| collect(v, found));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| collect(v, found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    collect(&json(&stack["Resources"]), &mut found);
    found
}

fn actions(statement: &serde_json::Value) -> Vec<String> {
    match &statement["Action"] {
        serde_json::Value::String(one) => vec![one.clone()],
        many => many
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect(),
    }
}

/// EventBus Kafka deploys no Kinesis resource and gives no Kinesis permission; the consumers
/// read the topic through MSK mappings in groups of their own, from the topic's start, resuming
/// a partition where a batch failed, with bounded retries into their dead-letter queues; every
/// Kafka permission names its cluster, topic or group; the relay and the poller run in the
/// cluster's network. EventBus Kinesis deploys nothing of Kafka.
#[test]
fn event_bus_kafka_reads_the_topic_through_msk_mappings_and_kinesis_deploys_nothing_of_kafka() {
    let template = template();
    let parameters: HashMap<&str, &str> = KAFKA.into_iter().collect();
    let kafka = Deploy::new(&template, &KAFKA).stack();

    for (id, resource) in kafka["Resources"].as_mapping().unwrap() {
        let kind = resource["Type"].as_str().unwrap();
        assert!(!kind.starts_with("AWS::Kinesis::"), "{id:?} is deployed on Kafka");
    }
    for statement in statements(&kafka) {
        for action in actions(&statement) {
            assert!(!action.starts_with("kinesis:"), "{statement} on Kafka");
            if action.starts_with("kafka") {
                let resource = statement["Resource"].as_str().unwrap_or_else(|| panic!("{statement}"));
                assert!(
                    resource.starts_with("arn:aws:kafka:eu-west-1:123456789012:") && !resource.contains('*'),
                    "{statement}"
                );
            }
        }
    }
    let environment = &kafka["Globals"]["Function"]["Environment"]["Variables"];
    assert_eq!(environment["EVENT_BUS"].as_str(), Some("kafka"));
    assert_eq!(
        environment["KAFKA_BOOTSTRAP_SERVERS"].as_str(),
        Some(parameters["KafkaBootstrapServers"])
    );
    assert_eq!(environment["KAFKA_TOPIC"].as_str(), Some("reservation-events"));
    assert_eq!(environment["KAFKA_AUTH"].as_str(), Some("IAM"));
    assert_eq!(
        environment["KAFKA_PARTITIONS"].as_str(),
        Some(parameters["KafkaTopicPartitions"]),
        "the relay and the poller map keys by the count the topic was created with"
    );
    assert!(environment.get("EVENTS_STREAM").is_none());

    let topic_arn = "arn:aws:kafka:eu-west-1:123456789012:topic/reservations/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0-s1/reservation-events";
    let mappings = resources_of_type(&kafka, "AWS::Lambda::EventSourceMapping");
    let mut groups = BTreeSet::new();
    for (function, queue, short) in consumers::ALL
        .iter()
        .map(|c| (c.logical_id("Function"), c.logical_id("DeadLetterQueue"), c.name))
    {
        let (function, queue) = (function.as_str(), queue.as_str());
        let reading: Vec<_> = mappings
            .values()
            .filter(|m| json(&m["Properties"]["FunctionName"]) == serde_json::json!({ "!Ref": function }))
            .collect();
        assert_eq!(reading.len(), 1, "{function} has one mapping");
        let mapping = json(&reading[0]["Properties"]);
        assert_eq!(mapping["EventSourceArn"], parameters["KafkaClusterArn"], "{function}");
        assert_eq!(
            mapping["Topics"],
            serde_json::json!(["reservation-events"]),
            "{function}"
        );
        let group = format!("{STACK_NAME}-{short}");
        assert_eq!(
            mapping["AmazonManagedKafkaEventSourceConfig"]["ConsumerGroupId"], group,
            "{function}"
        );
        groups.insert(group.clone());
        assert_eq!(mapping["StartingPosition"], "TRIM_HORIZON", "{function}");
        assert_eq!(
            mapping["FunctionResponseTypes"],
            serde_json::json!(["ReportBatchItemFailures"]),
            "{function}"
        );
        assert_eq!(mapping["BisectBatchOnFunctionError"], true, "{function}");
        let retries: i64 = mapping["MaximumRetryAttempts"].as_str().unwrap().parse().unwrap();
        assert!(retries > 0, "{function}: retries are bounded, and there are some");
        assert_eq!(
            mapping["DestinationConfig"]["OnFailure"]["Destination"],
            serde_json::json!({ "!GetAtt": format!("{queue}.Arn") }),
            "{function}"
        );
        // Its role may read that topic and commit in that group, nothing wider.
        let role = statements(&Value::Mapping(
            [("Resources".into(), kafka["Resources"][function].clone())]
                .into_iter()
                .collect(),
        ));
        let granted = |action: &str| {
            role.iter()
                .filter(|s| actions(s).iter().any(|a| a == action))
                .map(|s| s["Resource"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(granted("kafka-cluster:ReadData"), [topic_arn], "{function}");
        assert_eq!(
            granted("kafka-cluster:AlterGroup"),
            [format!(
                "arn:aws:kafka:eu-west-1:123456789012:group/reservations/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0-s1/{group}"
            )],
            "{function}"
        );
    }
    assert_eq!(
        groups.len(),
        consumers::ALL.len(),
        "each consumer in a group of its own"
    );
    // Provisioned pollers (the error-handling controls need them), billed by Event Poller Unit:
    // the consumers' mappings share one poller group, so they share those units.
    let pollers: BTreeSet<String> = mappings
        .values()
        .filter(|m| m["Properties"].get("Topics").is_some())
        .map(|m| json(&m["Properties"]["ProvisionedPollerConfig"]).to_string())
        .collect();
    assert_eq!(
        pollers,
        BTreeSet::from([serde_json::json!({
            "MinimumPollers": 1, "MaximumPollers": 10, "PollerGroupName": format!("{STACK_NAME}-consumers")
        })
        .to_string()])
    );
    // The relay still reads the outbox's stream; what it publishes to is the topic.
    assert!(mappings.contains_key("RelayEventSourceMapping"));
    for publisher in ["RelayFunction", "PollerFunction"] {
        let vpc = json(&kafka["Resources"][publisher]["Properties"]["VpcConfig"]);
        assert_eq!(
            vpc,
            serde_json::json!({
                "SubnetIds": parameters["KafkaSubnetIds"].split(',').collect::<Vec<_>>(),
                "SecurityGroupIds": [parameters["KafkaSecurityGroupIds"]],
            }),
            "{publisher}"
        );
        let role = json(&kafka["Resources"][format!("{publisher}Role").as_str()]);
        let writes: Vec<_> = role["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| actions(s).iter().any(|a| a == "kafka-cluster:WriteData"))
            .map(|s| s["Resource"].clone())
            .collect();
        assert_eq!(writes, [topic_arn], "{publisher}");
    }
    let alarms = watched_metrics(&kafka);
    for consumer in consumers::ALL.iter().map(|c| c.logical_id("Function")) {
        let key = |metric: &str| ("AWS/Lambda".to_owned(), metric.to_owned(), consumer.clone());
        assert!(alarms.contains(&key("OffsetLag")), "{consumer} lag on Kafka");
        assert!(
            !alarms.contains(&key("IteratorAge")),
            "{consumer} has no iterator on Kafka"
        );
    }
    // The outputs reservations-replay --stack reads, each one value as its flag takes it.
    let output = |name: &str| kafka["Outputs"][name]["Value"].as_str().map(str::to_owned);
    assert_eq!(output("EventsTopic").as_deref(), Some("reservation-events"));
    assert_eq!(
        output("KafkaBootstrapBrokers").as_deref(),
        Some(parameters["KafkaBootstrapServers"])
    );
    assert_eq!(
        output("EventsTopicPartitions").as_deref(),
        Some(parameters["KafkaTopicPartitions"])
    );
    // A refused publish pages, on the relay, and on the poller in polling mode.
    let refusals: Vec<_> = resources_of_type(&kafka, "AWS::CloudWatch::Alarm")
        .into_values()
        .filter(|alarm| alarm["Properties"]["MetricName"].as_str() == Some("PublishRefused"))
        .map(|alarm| json(&alarm["Properties"]["Dimensions"][0]["Value"]))
        .collect();
    assert_eq!(refusals, [serde_json::json!("relay")]);
    let polling: Vec<_> = KAFKA.iter().copied().chain([("RelayMode", "polling")]).collect();
    let polling = Deploy::new(&template, &polling).stack();
    let refusals = resources_of_type(&polling, "AWS::CloudWatch::Alarm")
        .into_values()
        .filter(|alarm| alarm["Properties"]["MetricName"].as_str() == Some("PublishRefused"))
        .count();
    assert_eq!(refusals, 2);
    assert!(kafka["Outputs"].get("EventsStreamName").is_none());

    // Moving to a new topic: new mappings in new groups (a group belongs to one mapping), and the
    // roles follow them.
    let moved: Vec<_> = KAFKA
        .iter()
        .copied()
        .chain([
            ("KafkaTopic", "reservation-events-v2"),
            ("KafkaConsumerGroupSuffix", "-v2"),
        ])
        .collect();
    let moved = Deploy::new(&template, &moved).stack();
    let moved_text = json(&moved["Resources"]).to_string();
    for short in ["projector", "notifier"] {
        let group = format!("{STACK_NAME}-{short}-v2");
        assert!(
            moved_text.contains(&format!("\"ConsumerGroupId\":\"{group}\"")),
            "{group}"
        );
        // The group's ARN: .../group/<cluster name>/<cluster uuid>/<group>.
        assert!(moved_text.contains(&format!("-s1/{group}\"")), "{group} in its role");
        assert!(
            !moved_text.contains(&format!("\"ConsumerGroupId\":\"{STACK_NAME}-{short}\""))
                && !moved_text.contains(&format!("-s1/{STACK_NAME}-{short}\"")),
            "{short}'s old group"
        );
    }

    let kinesis = Deploy::new(&template, &[]).stack();
    for (id, resource) in kinesis["Resources"].as_mapping().unwrap() {
        let properties = &resource["Properties"];
        assert!(properties.get("Topics").is_none(), "{id:?} reads a topic on Kinesis");
        assert!(properties.get("VpcConfig").is_none(), "{id:?} is in a VPC on Kinesis");
        let managed = json(&properties["ManagedPolicyArns"]).to_string();
        assert!(
            !managed.contains("VPCAccess"),
            "{id:?} may manage network interfaces on Kinesis"
        );
    }
    for statement in statements(&kinesis) {
        for action in actions(&statement) {
            assert!(
                !action.starts_with("kafka") && !action.starts_with("ec2:"),
                "{statement} on Kinesis"
            );
        }
    }
    let environment = &kinesis["Globals"]["Function"]["Environment"]["Variables"];
    assert_eq!(environment["EVENT_BUS"].as_str(), Some("kinesis"));
    let names: Vec<&str> = environment
        .as_mapping()
        .unwrap()
        .keys()
        .filter_map(Value::as_str)
        .collect();
    assert!(!names.iter().any(|n| n.starts_with("KAFKA_")), "{names:?}");
    assert!(kinesis["Outputs"].get("EventsStreamName").is_some());
    for kafka_only in ["EventsTopic", "KafkaBootstrapBrokers", "EventsTopicPartitions"] {
        assert!(kinesis["Outputs"].get(kafka_only).is_none(), "{kafka_only}");
    }
    assert!(
        !resources_of_type(&kinesis, "AWS::CloudWatch::Alarm")
            .values()
            .any(|alarm| alarm["Properties"]["MetricName"].as_str() == Some("PublishRefused")),
        "only the Kafka bus refuses"
    );
}

/// ApiEndpoint RestApi: every path and method reaches the API function (which routes, as behind
/// the HTTP API's `$default`), signed under AuthMode IAM, and every error the gateway makes itself
/// is problem+json with a code openapi.yaml documents, its body's status the answer's.
#[test]
fn the_rest_api_sends_every_path_to_the_function_and_answers_its_own_errors_as_documented_problems() {
    let template = template();
    let openapi: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(root().join("openapi/openapi.yaml")).unwrap()).unwrap();
    let codes: BTreeSet<&str> = openapi["components"]["schemas"]["Problem"]["properties"]["code"]["enum"]
        .as_sequence()
        .expect("the Problem codes")
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for (auth, expected) in [("IAM", "AWS_IAM"), ("NONE", "NONE")] {
        let stack = Deploy::new(&template, &[("ApiEndpoint", "RestApi"), ("AuthMode", auth)]).stack();
        for kind in ["AWS::ApiGatewayV2::Api", "AWS::Lambda::Url"] {
            assert!(resources_of_type(&stack, kind).is_empty(), "{kind} beside the REST API");
        }
        let methods = resources_of_type(&stack, "AWS::ApiGateway::Method");
        let resources: BTreeSet<String> = methods
            .values()
            .map(|m| {
                let properties = &m["Properties"];
                assert_eq!(properties["HttpMethod"].as_str(), Some("ANY"));
                assert_eq!(
                    properties["AuthorizationType"].as_str(),
                    Some(expected),
                    "AuthMode {auth}"
                );
                assert_eq!(properties["Integration"]["Type"].as_str(), Some("AWS_PROXY"));
                let uri = json(&properties["Integration"]["Uri"]).to_string();
                assert!(uri.contains("${ApiFunction.Arn}"), "{uri}");
                json(&properties["ResourceId"]).to_string()
            })
            .collect();
        assert_eq!(
            resources,
            BTreeSet::from([
                r#"{"!GetAtt":"RestApi.RootResourceId"}"#.to_owned(),
                r#"{"!Ref":"RestApiProxyResource"}"#.to_owned()
            ]),
            "the root and every path below it"
        );
        let proxy = &stack["Resources"]["RestApiProxyResource"]["Properties"];
        assert_eq!(proxy["PathPart"].as_str(), Some("{proxy+}"));

        let responses = resources_of_type(&stack, "AWS::ApiGateway::GatewayResponse");
        let kinds: BTreeSet<&str> = responses
            .values()
            .map(|r| r["Properties"]["ResponseType"].as_str().unwrap())
            .collect();
        for kind in [
            "MISSING_AUTHENTICATION_TOKEN",
            "ACCESS_DENIED",
            "THROTTLED",
            "REQUEST_TOO_LARGE",
            "DEFAULT_5XX",
        ] {
            assert!(kinds.contains(kind), "no problem+json for {kind}");
        }
        for (id, response) in responses {
            let properties = &response["Properties"];
            assert_eq!(
                properties["ResponseParameters"]["gatewayresponse.header.Content-Type"].as_str(),
                Some("'application/problem+json'"),
                "{id}"
            );
            let body: serde_json::Value =
                serde_json::from_str(properties["ResponseTemplates"]["application/json"].as_str().unwrap())
                    .unwrap_or_else(|e| panic!("{id}: the body is not JSON: {e}"));
            let status: u64 = properties["StatusCode"].as_str().unwrap().parse().unwrap();
            assert_eq!(body["status"].as_u64(), Some(status), "{id}");
            let code = body["code"].as_str().unwrap();
            assert!(codes.contains(code), "{id}: {code} is not a documented problem code");
            assert_eq!(
                body["type"].as_str(),
                Some(format!("urn:reservations:problem:{code}").as_str())
            );
        }
    }
}

/// The dashboard of every deployment (each front door, relay mode and bus) is a JSON body whose
/// every metric names a resource of that very stack, and shows what an operator watches: the
/// API's requests, errors and latency, the relay's iterator age or the poller's backlog, each
/// consumer's lag and errors, the dead letters, the notifications.
#[test]
fn the_dashboard_of_every_deployment_parses_and_names_only_that_stacks_resources() {
    let template = template();
    let mut deployments: Vec<Vec<(&str, &str)>> = Vec::new();
    for endpoint in ["HttpApi", "RestApi", "FunctionUrl"] {
        for mode in ["stream", "polling"] {
            deployments.push(vec![("ApiEndpoint", endpoint), ("RelayMode", mode)]);
        }
    }
    deployments.push(KAFKA.iter().copied().chain([("RelayMode", "stream")]).collect());
    for parameters in &deployments {
        let deploy = Deploy::new(&template, parameters);
        let stack = deploy.stack();
        let dashboard = &stack["Resources"]["PipelineDashboard"]["Properties"];
        let named = |name: &str| deploy.named(name);
        let body = joined_text(&json(&dashboard["DashboardBody"]), &named);
        let body: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{parameters:?}: the body is not JSON ({e}): {body}"));
        let mut watched = BTreeSet::new();
        for widget in body["widgets"].as_array().expect("widgets") {
            for metric in widget["properties"]["metrics"].as_array().expect("metrics") {
                let parts: Vec<&str> = metric.as_array().unwrap().iter().filter_map(|p| p.as_str()).collect();
                let (namespace, name) = (parts[0], parts[1]);
                for value in parts[2..].iter().skip(1).step_by(2) {
                    if let Some(resource) = value.strip_prefix('<').and_then(|v| v.strip_suffix('>')) {
                        assert!(
                            stack["Resources"].get(resource).is_some(),
                            "{parameters:?}: {namespace} {name} names {resource}, which this stack does not have"
                        );
                    }
                }
                watched.insert(format!("{namespace} {name}"));
            }
        }
        let condition = |name: &str| deploy.condition(name);
        let api = if condition("UseHttpApi") {
            ["AWS/ApiGateway Count", "AWS/ApiGateway 5xx", "AWS/ApiGateway Latency"]
        } else if condition("UseRestApi") {
            [
                "AWS/ApiGateway Count",
                "AWS/ApiGateway 5XXError",
                "AWS/ApiGateway Latency",
            ]
        } else {
            [
                "AWS/Lambda UrlRequestCount",
                "AWS/Lambda Url5xxCount",
                "AWS/Lambda UrlRequestLatency",
            ]
        };
        let publisher = if condition("PollingRelay") {
            "ReservationOutbox PendingEvents"
        } else {
            "AWS/Lambda IteratorAge"
        };
        let lag = if condition("KinesisBus") {
            "AWS/Lambda IteratorAge"
        } else {
            "AWS/Lambda OffsetLag"
        };
        for expected in api.into_iter().chain([
            publisher,
            lag,
            "AWS/Lambda Errors",
            "AWS/SQS ApproximateNumberOfMessagesVisible",
            "AWS/SNS NumberOfMessagesPublished",
            "AWS/SNS NumberOfNotificationsFailed",
        ]) {
            assert!(
                watched.contains(expected),
                "{parameters:?}: the dashboard lacks {expected}"
            );
        }
    }
}

/// An SDK configuration that reaches nothing: building a consumer's clients makes no call.
fn offline_sdk() -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("eu-west-1"))
        .build()
}
