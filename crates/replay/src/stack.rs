//! A deployed stack's names, read from its CloudFormation outputs: what `--stack NAME` fills in,
//! so nobody copies table and stream names from the outputs into variables by hand. A name given
//! explicitly (a flag or a variable) still wins.

use std::collections::HashMap;

/// Which stack output gives which variable (the functions' own names for them).
const OUTPUT_VARS: [(&str, &str); 7] = [
    ("EventsStreamName", "EVENTS_STREAM"),
    ("OutboxTableName", "OUTBOX_TABLE"),
    ("ReservationsTableName", "RESERVATIONS_TABLE"),
    ("ReadModelTableName", "READ_MODEL_TABLE"),
    ("NotificationsTableName", "NOTIFICATIONS_TABLE"),
    ("NotificationsTopicArn", "NOTIFICATIONS_TOPIC_ARN"),
    ("PrimaryRegion", "PRIMARY_REGION"),
];

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("cannot read the outputs of stack {stack} (CloudFormation DescribeStacks)")]
    Describe {
        stack: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("stack {stack} does not exist here (check the region and the account)")]
    Missing { stack: String },
    #[error("stack {stack} has neither an EventsStreamName nor an EventsTopic output: is it a reservations stack?")]
    NoBus { stack: String },
    #[error("stack {stack} has an EventsTopic output but no KafkaBootstrapBrokers output: is it a reservations stack?")]
    NoBrokers { stack: String },
}

/// The variables `outputs` give: the names, and the bus the stack publishes to (a Kafka stack's
/// `EventsTopic`, `KafkaBootstrapBrokers` and `EventsTopicPartitions`, reached with IAM as its
/// functions do).
pub fn vars_from_outputs(
    stack: &str,
    outputs: &HashMap<String, String>,
) -> Result<HashMap<String, String>, StackError> {
    let mut vars: HashMap<String, String> = OUTPUT_VARS
        .iter()
        .filter_map(|(output, var)| Some(((*var).to_owned(), outputs.get(*output)?.clone())))
        .collect();
    if outputs.contains_key("EventsStreamName") {
        vars.insert("EVENT_BUS".into(), "kinesis".into());
    } else if let Some(topic) = outputs.get("EventsTopic") {
        let brokers = outputs
            .get("KafkaBootstrapBrokers")
            .ok_or_else(|| StackError::NoBrokers {
                stack: stack.to_owned(),
            })?;
        vars.insert("EVENT_BUS".into(), "kafka".into());
        vars.insert(kafka_bus::TOPIC.var.into(), topic.clone());
        vars.insert(kafka_bus::BOOTSTRAP_SERVERS.var.into(), brokers.clone());
        vars.insert("KAFKA_AUTH".into(), "IAM".into());
        if let Some(partitions) = outputs.get("EventsTopicPartitions") {
            vars.insert(kafka_bus::PARTITIONS.var.into(), partitions.clone());
        }
    } else {
        return Err(StackError::NoBus {
            stack: stack.to_owned(),
        });
    }
    Ok(vars)
}

/// `explicit` over `from_stack`: a variable that is set wins over the stack's output.
pub fn overlay(from_stack: HashMap<String, String>, explicit: HashMap<String, String>) -> HashMap<String, String> {
    let mut vars = from_stack;
    vars.extend(explicit);
    vars
}

/// The outputs of stack `stack`, by key.
pub async fn outputs(
    client: &aws_sdk_cloudformation::Client,
    stack: &str,
) -> Result<HashMap<String, String>, StackError> {
    let described = client
        .describe_stacks()
        .stack_name(stack)
        .send()
        .await
        .map_err(|error| {
            // CloudFormation answers a stack that is not there with a ValidationError.
            let missing = error
                .as_service_error()
                .and_then(|e| aws_sdk_cloudformation::error::ProvideErrorMetadata::message(e))
                .is_some_and(|m| m.contains("does not exist"));
            if missing {
                StackError::Missing {
                    stack: stack.to_owned(),
                }
            } else {
                StackError::Describe {
                    stack: stack.to_owned(),
                    source: Box::new(error),
                }
            }
        })?;
    let found = described.stacks().first().ok_or_else(|| StackError::Missing {
        stack: stack.to_owned(),
    })?;
    Ok(found
        .outputs()
        .iter()
        .filter_map(|o| Some((o.output_key()?.to_owned(), o.output_value()?.to_owned())))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn a_kinesis_stacks_outputs_name_the_stream_the_tables_and_the_topic() {
        let outputs = map(&[
            ("EventsStreamName", "reservations-EventsStream-x1"),
            ("OutboxTableName", "reservations-OutboxTable-x2"),
            ("ReservationsTableName", "reservations-ReservationsTable-x3"),
            ("ReadModelTableName", "reservations-ReadModelTable-x4"),
            ("NotificationsTableName", "reservations-NotificationsTable-x5"),
            ("NotificationsTopicArn", "arn:aws:sns:eu-west-1:123456789012:n.fifo"),
            ("PrimaryRegion", "us-east-1"),
            ("ApiUrl", "https://a1b2c3.execute-api.eu-west-1.amazonaws.com/prod"),
        ]);
        let vars = vars_from_outputs("reservations", &outputs).unwrap();
        assert_eq!(
            vars,
            map(&[
                ("EVENT_BUS", "kinesis"),
                ("EVENTS_STREAM", "reservations-EventsStream-x1"),
                ("OUTBOX_TABLE", "reservations-OutboxTable-x2"),
                ("RESERVATIONS_TABLE", "reservations-ReservationsTable-x3"),
                ("READ_MODEL_TABLE", "reservations-ReadModelTable-x4"),
                ("NOTIFICATIONS_TABLE", "reservations-NotificationsTable-x5"),
                ("NOTIFICATIONS_TOPIC_ARN", "arn:aws:sns:eu-west-1:123456789012:n.fifo"),
                ("PRIMARY_REGION", "us-east-1"),
            ])
        );
        // An explicit name wins; the rest still come from the stack.
        let vars = overlay(vars, map(&[("READ_MODEL_TABLE", "rebuild-2026-12")]));
        assert_eq!(vars["READ_MODEL_TABLE"], "rebuild-2026-12");
        assert_eq!(vars["OUTBOX_TABLE"], "reservations-OutboxTable-x2");
    }

    #[test]
    fn a_kafka_stacks_outputs_give_the_topic_its_brokers_its_partition_count_and_iam() {
        let outputs = map(&[
            ("EventsTopic", "reservation-events"),
            ("KafkaBootstrapBrokers", "b-1.msk.example:9098,b-2.msk.example:9098"),
            ("EventsTopicPartitions", "6"),
        ]);
        let vars = vars_from_outputs("reservations", &outputs).unwrap();
        assert_eq!(vars["EVENT_BUS"], "kafka");
        assert_eq!(vars["KAFKA_TOPIC"], "reservation-events");
        assert_eq!(
            vars["KAFKA_BOOTSTRAP_SERVERS"],
            "b-1.msk.example:9098,b-2.msk.example:9098"
        );
        assert_eq!(vars["KAFKA_PARTITIONS"], "6");
        assert_eq!(vars["KAFKA_AUTH"], "IAM");
        // What the relay's config reads from them is that topic, those brokers and that count.
        let mut relay_vars = vars.clone();
        relay_vars.insert("DEAD_LETTER_FILE".into(), "/tmp/x".into());
        let relay::BusConfig::Kafka(kafka) = relay::RelayConfig::from_vars(&relay_vars).unwrap().bus else {
            panic!("not the Kafka bus");
        };
        assert_eq!(
            (
                kafka.topic.as_str(),
                kafka.bootstrap_servers.len(),
                kafka.partitions.map(|p| p.get())
            ),
            ("reservation-events", 2, Some(6))
        );

        let error = vars_from_outputs("reservations", &map(&[("EventsTopic", "reservation-events")])).unwrap_err();
        assert_eq!(
            error.to_string(),
            "stack reservations has an EventsTopic output but no KafkaBootstrapBrokers output: is it a reservations stack?"
        );
    }

    #[test]
    fn a_stack_without_a_bus_output_is_refused_naming_the_stack() {
        let error = vars_from_outputs("website", &map(&[("BucketName", "b")])).unwrap_err();
        assert_eq!(
            error.to_string(),
            "stack website has neither an EventsStreamName nor an EventsTopic output: is it a reservations stack?"
        );
    }
}
