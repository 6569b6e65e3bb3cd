//! A consumer that lives in a stack of its own (`examples/booking-ledger`, or a team's
//! repository: a Lambda function on the consumer kit, or any Lambda, with its SAM template), run
//! on the local stack as its stack wires it on AWS: its tables made from its template, its
//! function's environment from its template, its binary behind a mapping on the local bus.
//!
//! What is read from the template: the one `AWS::Serverless::Function` and its
//! `Environment.Variables`, and every `AWS::DynamoDB::Table`. A variable that is `!Ref` to one
//! of those tables becomes the local table's name; a plain value is kept; anything else (an
//! import of the product's exports, a dynamic reference) is for AWS, and the local stack sets
//! what it stands for itself: `EVENT_BUS` and the dead-letter file.

use crate::pipeline::consumer_mapping_config;
use crate::process::ProcessFunction;
use crate::resources::{TableProperties, create_table};
use anyhow::{Context, Result, bail};
use event_source_mapping::{EventSourceMapping, JsonLinesOnFailure, KafkaSource, KinesisSource};
use serde_yaml_ng::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// What the local stack needs of a consumer's template.
#[derive(Debug, Clone)]
pub struct OutsideConsumer {
    /// The function's logical id: its name here (logs, dead letters).
    pub name: String,
    /// Its tables by logical id.
    pub tables: BTreeMap<String, TableProperties>,
    /// Its environment: values, or the logical id of one of its tables.
    pub environment: BTreeMap<String, Setting>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Setting {
    Value(String),
    Table(String),
}

impl OutsideConsumer {
    pub fn from_template(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let template: Value =
            serde_yaml_ng::from_str(&text).with_context(|| format!("{} is not YAML", path.display()))?;
        let resources = template["Resources"]
            .as_mapping()
            .with_context(|| format!("{} has no Resources", path.display()))?;
        let of_type = |kind: &'static str| {
            resources
                .iter()
                .filter(move |(_, r)| r["Type"].as_str() == Some(kind))
                .map(|(id, r)| (id.as_str().unwrap_or_default().to_owned(), r))
        };
        let mut tables = BTreeMap::new();
        for (id, table) in of_type("AWS::DynamoDB::Table") {
            let properties = serde_json::to_value(&table["Properties"])?;
            let properties: TableProperties = serde_json::from_value(properties).with_context(|| {
                format!("table {id}: only literal keys, attributes and billing mode are made locally")
            })?;
            tables.insert(id, properties);
        }
        let functions: Vec<_> = of_type("AWS::Serverless::Function").collect();
        let [(name, function)] = functions.as_slice() else {
            bail!(
                "{} must declare one AWS::Serverless::Function, not {}",
                path.display(),
                functions.len()
            );
        };
        let mut environment = BTreeMap::new();
        let variables = function["Properties"]["Environment"]["Variables"].as_mapping();
        for (var, value) in variables.into_iter().flatten() {
            let var = var.as_str().unwrap_or_default().to_owned();
            let setting = match value {
                Value::String(text) => Setting::Value(text.clone()),
                Value::Number(number) => Setting::Value(number.to_string()),
                Value::Tagged(tagged) if tagged.tag == "Ref" => match tagged.value.as_str() {
                    Some(id) if tables.contains_key(id) => Setting::Table(id.to_owned()),
                    _ => continue,
                },
                _ => continue,
            };
            environment.insert(var, setting);
        }
        Ok(Self {
            name: name.clone(),
            tables,
            environment,
        })
    }

    /// The local name of its table `id`.
    pub fn table_name(&self, prefix: &str, id: &str) -> String {
        format!("{prefix}{}", id.to_lowercase())
    }

    /// Creates its tables (named `<prefix><logical id>`, lower case) unless they exist, and
    /// returns its function's environment on the local stack, `bus` and `dead_letter_file` set.
    pub async fn provision(
        &self,
        dynamodb: &aws_sdk_dynamodb::Client,
        prefix: &str,
        bus: settings::EventBus,
        dead_letter_file: &Path,
    ) -> Result<HashMap<String, String>> {
        for (id, properties) in &self.tables {
            let name = self.table_name(prefix, id);
            create_table(dynamodb, &name, properties)
                .await
                .with_context(|| format!("creating table {name}"))?;
        }
        let mut environment: HashMap<String, String> = self
            .environment
            .iter()
            .map(|(var, setting)| {
                let value = match setting {
                    Setting::Value(value) => value.clone(),
                    Setting::Table(id) => self.table_name(prefix, id),
                };
                (var.clone(), value)
            })
            .collect();
        let bus = match bus {
            settings::EventBus::Kinesis => "kinesis",
            settings::EventBus::Kafka => "kafka",
        };
        environment.insert("EVENT_BUS".into(), bus.into());
        environment.remove("DEAD_LETTER_QUEUE_URL");
        environment.insert("DEAD_LETTER_FILE".into(), dead_letter_file.display().to_string());
        Ok(environment)
    }
}

/// An outside consumer's process behind a mapping on the bus `S`.
pub type ProcessMapping<S> = EventSourceMapping<S, ProcessFunction, JsonLinesOnFailure>;

/// Where a running outside consumer keeps its files: `<dir>/<name>.log` (its output: logs and
/// metrics), `<dir>/<name>-dead-letters.jsonl` and `<dir>/<name>-on-failure.jsonl`.
pub fn files(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    (
        dir.join(format!("{name}.log")),
        dir.join(format!("{name}-dead-letters.jsonl")),
        dir.join(format!("{name}-on-failure.jsonl")),
    )
}

/// `binary` behind a mapping on the Kinesis stream `stream`, with `environment`.
pub async fn on_kinesis(
    sdk: &aws_config::SdkConfig,
    stream: &str,
    name: &str,
    binary: &Path,
    environment: &HashMap<String, String>,
    dir: &Path,
) -> Result<ProcessMapping<KinesisSource>> {
    let (log, _, on_failure) = files(dir, name);
    let source = KinesisSource::new(aws_sdk_kinesis::Client::new(sdk), stream)
        .await
        .with_context(|| format!("Kinesis stream {stream}"))?;
    let function = ProcessFunction::start(binary, name, environment, &log).await?;
    Ok(EventSourceMapping::new(
        source,
        function,
        Some(JsonLinesOnFailure::new(on_failure)),
        consumer_mapping_config(name),
    ))
}

/// `binary` behind a mapping on the Kafka topic of `kafka`, in a consumer group of its own.
pub async fn on_kafka(
    kafka: &kafka_bus::KafkaConfig,
    name: &str,
    binary: &Path,
    environment: &HashMap<String, String>,
    dir: &Path,
) -> Result<ProcessMapping<KafkaSource>> {
    let (log, _, on_failure) = files(dir, name);
    let arn = format!("arn:aws:kafka:us-east-1:000000000000:cluster/local/{}", kafka.topic);
    let source = KafkaSource::new(kafka.clone(), arn)
        .await
        .with_context(|| format!("Kafka topic {} on {}", kafka.topic, kafka.bootstrap_servers.join(",")))?;
    let function = ProcessFunction::start(binary, name, environment, &log).await?;
    Ok(EventSourceMapping::new(
        source,
        function,
        Some(JsonLinesOnFailure::new(on_failure)),
        consumer_mapping_config(name),
    ))
}
