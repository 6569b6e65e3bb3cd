//! template.yaml's `Rules` refuse, before anything is created, the parameter combinations that
//! cannot work, each with a message saying what to set. LocalStack creates a change set whatever
//! the Rules say, so they are evaluated here, as `test_support::template` reads them.

use serde_yaml_ng::Value;
use test_support::template::{Deploy, KAFKA, source as template};

fn refusals(template: &Value, overrides: &[(&str, &str)]) -> Vec<String> {
    Deploy::new(template, overrides).refusals()
}

#[test]
fn jwt_without_an_issuer_or_an_audience_is_refused_with_what_to_set() {
    let template = template();
    assert_eq!(
        refusals(&template, &[("AuthMode", "JWT")]),
        [
            "AuthMode JWT needs JwtIssuer, the token issuer's URL.",
            "AuthMode JWT needs JwtAudience, the audiences (client ids) to accept."
        ]
    );
    let issuer = ("JwtIssuer", "https://cognito-idp.eu-west-1.amazonaws.com/pool");
    assert_eq!(
        refusals(&template, &[("AuthMode", "JWT"), issuer]),
        ["AuthMode JWT needs JwtAudience, the audiences (client ids) to accept."]
    );
    let audiences = ("JwtAudience", "client-a,client-b");
    assert!(refusals(&template, &[("AuthMode", "JWT"), issuer, audiences]).is_empty());
}

#[test]
fn a_function_url_or_a_rest_api_with_jwt_is_refused_and_every_other_front_door_deploys() {
    let template = template();
    let jwt = [
        ("AuthMode", "JWT"),
        ("JwtIssuer", "https://issuer.example"),
        ("JwtAudience", "client"),
    ];
    let with_function_url: Vec<_> = jwt.iter().copied().chain([("ApiEndpoint", "FunctionUrl")]).collect();
    assert_eq!(
        refusals(&template, &with_function_url),
        ["A Lambda function URL cannot validate JWTs; use ApiEndpoint HttpApi with AuthMode JWT."]
    );
    let with_rest_api: Vec<_> = jwt.iter().copied().chain([("ApiEndpoint", "RestApi")]).collect();
    assert_eq!(
        refusals(&template, &with_rest_api),
        [
            "A REST API validates tokens of Amazon Cognito user pools only, not of any JWT issuer; use ApiEndpoint HttpApi with AuthMode JWT."
        ]
    );
    // The defaults (HTTP API, IAM), and what scripts/deploy-localstack.sh deploys.
    assert!(refusals(&template, &[]).is_empty());
    assert!(refusals(&template, &[("ApiEndpoint", "RestApi"), ("AuthMode", "IAM")]).is_empty());
    assert!(refusals(&template, &[("ApiEndpoint", "RestApi"), ("AuthMode", "NONE")]).is_empty());
    assert!(refusals(&template, &[("ApiEndpoint", "FunctionUrl"), ("AuthMode", "NONE")]).is_empty());
    assert!(refusals(&template, &[("ApiEndpoint", "FunctionUrl"), ("AuthMode", "IAM")]).is_empty());
}

#[test]
fn kafka_without_its_cluster_brokers_or_network_is_refused_with_what_to_set() {
    let template = template();
    assert_eq!(
        refusals(&template, &[("EventBus", "Kafka")]),
        [
            "EventBus Kafka needs KafkaClusterArn, the MSK cluster's ARN.",
            "EventBus Kafka needs KafkaBootstrapServers, the cluster's IAM bootstrap brokers (aws kafka get-bootstrap-brokers).",
            "EventBus Kafka needs KafkaTopicPartitions, the partition count the topic was created with.",
            "EventBus Kafka needs KafkaSubnetIds, subnets in the cluster's VPC for the relay and the poller.",
            "EventBus Kafka needs KafkaSecurityGroupIds, security groups that may reach the brokers."
        ]
    );
    // Each one missing is named alone.
    for (missing, _) in &KAFKA[1..] {
        let given: Vec<_> = KAFKA.iter().copied().filter(|(name, _)| name != missing).collect();
        let refused = refusals(&template, &given);
        assert_eq!(refused.len(), 1, "{missing}: {refused:?}");
        assert!(refused[0].contains(missing), "{missing}: {refused:?}");
    }
    let enhanced: Vec<_> = KAFKA.iter().copied().chain([("ConsumerFanOut", "ENHANCED")]).collect();
    assert_eq!(
        refusals(&template, &enhanced),
        ["ConsumerFanOut ENHANCED is a Kinesis feature; leave it SHARED with EventBus Kafka."]
    );
    assert!(refusals(&template, &KAFKA).is_empty());
    // The Kafka parameters mean nothing to a Kinesis deployment, and are not asked of it.
    assert!(refusals(&template, &[("EventBus", "Kinesis")]).is_empty());
}
