//! Provisioning from the one resource definition under `infra/`.

use anyhow::{Context, Result, bail};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, StreamSpecification, StreamViewType, TimeToLiveSpecification,
};
use aws_sdk_kinesis::types::StreamStatus;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// The definition file, embedded so the binary works from any directory.
pub const RESOURCES_JSON: &str = include_str!("../../../infra/resources.json");

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Resources {
    pub tables: Vec<TableResource>,
    pub streams: Vec<StreamResource>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TableResource {
    pub logical_id: String,
    pub name_from: String,
    pub properties: TableProperties,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TableProperties {
    pub billing_mode: String,
    pub attribute_definitions: Vec<AttributeDef>,
    pub key_schema: Vec<KeyDef>,
    #[serde(default)]
    pub global_secondary_indexes: Vec<IndexDef>,
    #[serde(default)]
    pub stream_specification: Option<StreamSpec>,
    #[serde(default)]
    pub time_to_live_specification: Option<TtlSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AttributeDef {
    pub attribute_name: String,
    pub attribute_type: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyDef {
    pub attribute_name: String,
    pub key_type: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IndexDef {
    pub index_name: String,
    pub key_schema: Vec<KeyDef>,
    pub projection: ProjectionDef,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProjectionDef {
    pub projection_type: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StreamSpec {
    pub stream_view_type: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TtlSpec {
    pub attribute_name: String,
    pub enabled: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StreamResource {
    pub logical_id: String,
    pub name_from: String,
    pub properties: StreamProperties,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StreamProperties {
    pub shard_count: i32,
    #[serde(default)]
    pub retention_period_hours: Option<i32>,
}

impl Resources {
    pub fn embedded() -> Result<Self> {
        Self::parse(RESOURCES_JSON).context("infra/resources.json is not a valid resource definition")
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("{} is not a valid resource definition", path.display()))
    }

    /// Parses a definition whose every `NameFrom` is one of the product's resource variables.
    fn parse(text: &str) -> Result<Self> {
        let resources: Self = serde_json::from_str(text)?;
        for var in resources.name_vars() {
            if resource_name(var).is_none() {
                bail!("NameFrom {var} is not one of the product's resource names");
            }
        }
        Ok(resources)
    }

    fn name_vars(&self) -> impl Iterator<Item = &str> {
        let tables = self.tables.iter().map(|t| t.name_from.as_str());
        tables.chain(self.streams.iter().map(|s| s.name_from.as_str()))
    }
}

/// The product's resource named by `var`: one of settings' names, or a registered consumer's
/// table.
fn resource_name(var: &str) -> Option<settings::ResourceName> {
    settings::names::by_var(var).or_else(|| {
        consumers::ALL
            .iter()
            .map(|consumer| consumer.table)
            .find(|name| name.var == var)
    })
}

/// Physical names by environment variable name (`RESERVATIONS_TABLE` → `reservations`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceNames(HashMap<String, String>);

impl ResourceNames {
    /// Names from the environment, falling back to each resource's default, each with `prefix`
    /// (tests use a unique prefix so they never share tables).
    pub fn resolve(resources: &Resources, env: &HashMap<String, String>, prefix: &str) -> Self {
        let env = settings::Vars(env);
        let names = resources
            .name_vars()
            .filter_map(resource_name)
            .map(|name| (name.var.to_owned(), format!("{prefix}{}", env.name_or_default(name))))
            .collect();
        Self(names)
    }

    pub fn get(&self, var: &str) -> Option<&str> {
        self.0.get(var).map(String::as_str)
    }

    /// As environment variables, to hand to the functions.
    pub fn as_env(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

fn attribute_type(t: &str) -> Result<ScalarAttributeType> {
    Ok(match t {
        "S" => ScalarAttributeType::S,
        "N" => ScalarAttributeType::N,
        "B" => ScalarAttributeType::B,
        other => bail!("unknown AttributeType {other}"),
    })
}

fn key_type(t: &str) -> Result<KeyType> {
    Ok(match t {
        "HASH" => KeyType::Hash,
        "RANGE" => KeyType::Range,
        other => bail!("unknown KeyType {other}"),
    })
}

fn key_schema_element(key: &KeyDef) -> Result<KeySchemaElement> {
    Ok(KeySchemaElement::builder()
        .attribute_name(&key.attribute_name)
        .key_type(key_type(&key.key_type)?)
        .build()?)
}

/// Creates whatever of `resources` does not exist yet and waits until it is usable. Safe to run
/// again: existing tables and streams are left as they are.
pub async fn provision(
    dynamodb: &aws_sdk_dynamodb::Client,
    kinesis: &aws_sdk_kinesis::Client,
    resources: &Resources,
    names: &ResourceNames,
) -> Result<()> {
    for table in &resources.tables {
        let name = names.get(&table.name_from).context("table name not resolved")?;
        create_table(dynamodb, name, &table.properties)
            .await
            .with_context(|| format!("creating table {name}"))?;
    }
    for stream in &resources.streams {
        let name = names.get(&stream.name_from).context("stream name not resolved")?;
        create_stream(kinesis, name, &stream.properties)
            .await
            .with_context(|| format!("creating stream {name}"))?;
    }
    Ok(())
}

/// Creates one table unless it exists, and waits until it is usable.
pub async fn create_table(client: &aws_sdk_dynamodb::Client, name: &str, props: &TableProperties) -> Result<()> {
    let exists = client.describe_table().table_name(name).send().await;
    match exists {
        Ok(_) => tracing::info!(table = name, "table exists"),
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            let mut request = client
                .create_table()
                .table_name(name)
                .billing_mode(BillingMode::from(props.billing_mode.as_str()));
            for def in &props.attribute_definitions {
                request = request.attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name(&def.attribute_name)
                        .attribute_type(attribute_type(&def.attribute_type)?)
                        .build()?,
                );
            }
            for key in &props.key_schema {
                request = request.key_schema(key_schema_element(key)?);
            }
            for index in &props.global_secondary_indexes {
                request = request.global_secondary_indexes(
                    GlobalSecondaryIndex::builder()
                        .index_name(&index.index_name)
                        .set_key_schema(Some(
                            index.key_schema.iter().map(key_schema_element).collect::<Result<_>>()?,
                        ))
                        .projection(
                            Projection::builder()
                                .projection_type(ProjectionType::from(index.projection.projection_type.as_str()))
                                .build(),
                        )
                        .build()?,
                );
            }
            if let Some(stream) = &props.stream_specification {
                request = request.stream_specification(
                    StreamSpecification::builder()
                        .stream_enabled(true)
                        .stream_view_type(StreamViewType::from(stream.stream_view_type.as_str()))
                        .build()?,
                );
            }
            request.send().await?;
            tracing::info!(table = name, "table created");
        }
        Err(err) => return Err(err.into()),
    }
    if let Some(ttl) = &props.time_to_live_specification {
        let current = client.describe_time_to_live().table_name(name).send().await?;
        let enabled = current
            .time_to_live_description()
            .and_then(|d| d.attribute_name())
            .is_some_and(|a| a == ttl.attribute_name);
        if !enabled {
            client
                .update_time_to_live()
                .table_name(name)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .attribute_name(&ttl.attribute_name)
                        .enabled(ttl.enabled)
                        .build()?,
                )
                .send()
                .await?;
        }
    }
    Ok(())
}

/// Creates one stream unless it exists, and waits until it is ACTIVE.
pub async fn create_stream(client: &aws_sdk_kinesis::Client, name: &str, props: &StreamProperties) -> Result<()> {
    let exists = client.describe_stream_summary().stream_name(name).send().await;
    match exists {
        Ok(_) => tracing::info!(stream = name, "stream exists"),
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            client
                .create_stream()
                .stream_name(name)
                .shard_count(props.shard_count)
                .send()
                .await?;
            tracing::info!(stream = name, shards = props.shard_count, "stream created");
        }
        Err(err) => return Err(err.into()),
    }
    // Creating takes a moment even on kinesis-mock; nothing can be put until it is ACTIVE.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let summary = client.describe_stream_summary().stream_name(name).send().await?;
        let status = summary.stream_description_summary().map(|d| d.stream_status().clone());
        if status == Some(StreamStatus::Active) {
            break;
        }
        if Instant::now() > deadline {
            bail!("stream {name} not ACTIVE after 60 s (status {status:?})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Some(hours) = props.retention_period_hours.filter(|h| *h > 24) {
        client
            .increase_stream_retention_period()
            .stream_name(name)
            .retention_period_hours(hours)
            .send()
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_definition_parses_and_names_the_design_resources() {
        let resources = Resources::embedded().unwrap();
        let names = ResourceNames::resolve(&resources, &HashMap::new(), "");
        assert_eq!(names.get("RESERVATIONS_TABLE"), Some("reservations"));
        assert_eq!(names.get("OUTBOX_TABLE"), Some("reservation-outbox"));
        assert_eq!(names.get("EVENTS_STREAM"), Some("reservation-events"));
        let outbox = resources.tables.iter().find(|t| t.logical_id == "OutboxTable").unwrap();
        assert_eq!(
            outbox
                .properties
                .stream_specification
                .as_ref()
                .unwrap()
                .stream_view_type,
            "NEW_IMAGE"
        );
        assert_eq!(
            outbox
                .properties
                .time_to_live_specification
                .as_ref()
                .unwrap()
                .attribute_name,
            "expires_at"
        );
    }

    #[test]
    fn names_come_from_the_environment_and_take_a_prefix() {
        let resources = Resources::embedded().unwrap();
        let env = HashMap::from([("OUTBOX_TABLE".to_string(), "my-outbox".to_string())]);
        let names = ResourceNames::resolve(&resources, &env, "t1-");
        assert_eq!(names.get("OUTBOX_TABLE"), Some("t1-my-outbox"));
        assert_eq!(names.get("RESERVATIONS_TABLE"), Some("t1-reservations"));
    }
}
