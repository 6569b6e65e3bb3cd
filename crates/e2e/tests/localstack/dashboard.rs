//! The CloudWatch dashboard of each deployed stack (`<stack>-pipeline`): its body, as
//! CloudFormation makes it for that stack, parses, watches what the stack's relay mode runs, and
//! every AWS metric it graphs names a resource of that stack (a function, table, stream, queue,
//! topic or the REST API and its stage), never another stack's or a placeholder.
//!
//! LocalStack's community edition has no provider for `AWS::CloudWatch::Dashboard`: its
//! CloudFormation reports the resource created, with the physical id `unknown`, and CloudWatch
//! holds no dashboard. So the body is resolved here from template.yaml with the parameters the
//! stack was deployed with and the names its resources really got, which is what CloudFormation
//! would hand to CloudWatch.

use e2e::DeployedStack;
use std::collections::{BTreeMap, BTreeSet};
use test_support::template::{Deploy, joined_text, source, to_json};

#[tokio::test]
async fn each_deployed_stacks_dashboard_parses_and_graphs_only_that_stacks_resources() {
    for (var, publisher) in [
        ("E2E_STACK_OUTPUTS", "AWS/Lambda IteratorAge"),
        ("E2E_POLLING_STACK_OUTPUTS", "ReservationOutbox PendingEvents"),
    ] {
        let stack = DeployedStack::from_env(var).await;
        let watched = check_dashboard(&stack).await;
        for expected in [
            "AWS/ApiGateway Count",
            "AWS/ApiGateway 5XXError",
            "AWS/ApiGateway Latency",
            publisher,
            "AWS/Lambda Errors",
            "AWS/Lambda IteratorAge",
            "AWS/SQS ApproximateNumberOfMessagesVisible",
            "AWS/SNS NumberOfMessagesPublished",
            "AWS/SNS NumberOfNotificationsFailed",
        ] {
            assert!(
                watched.contains(expected),
                "{}: the dashboard does not graph {expected}: {watched:?}",
                stack.name()
            );
        }
    }
}

/// Checks the stack's dashboard and answers the metrics it graphs, as "namespace name".
async fn check_dashboard(stack: &DeployedStack) -> BTreeSet<String> {
    let described = cloudformation(stack)
        .describe_stacks()
        .stack_name(stack.name())
        .send()
        .await
        .expect("the stack");
    let parameters: Vec<(&str, &str)> = described.stacks()[0]
        .parameters()
        .iter()
        .map(|p| {
            (
                p.parameter_key().unwrap_or_default(),
                p.parameter_value().unwrap_or_default(),
            )
        })
        .collect();
    let region = stack.sdk.region().expect("a region").to_string();
    let template = source();
    let deploy = Deploy::new(&template, &parameters).deployed_as(stack.name(), &region);
    let deployed = deploy.stack();
    let dashboard = &deployed["Resources"]["PipelineDashboard"]["Properties"];

    let resources = resources(stack).await;
    // Parameters and pseudo parameters as the deployment has them, resources as they were named.
    let named = |name: &str| {
        deploy.named(name).or_else(|| match name.split_once('.') {
            Some((logical, "QueueName" | "TopicName")) => Some(short_name(resources.get(logical)?).to_owned()),
            Some(_) => None,
            None => resources.get(name).cloned(),
        })
    };
    let body = joined_text(&to_json(&dashboard["DashboardBody"]), &named);
    let body: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{}: the body is not JSON ({e}): {body}", stack.name()));

    let names = resource_names(stack, &resources).await;
    let mut watched = BTreeSet::new();
    for widget in body["widgets"].as_array().expect("widgets") {
        for metric in widget["properties"]["metrics"].as_array().expect("metrics") {
            let parts: Vec<&str> = metric
                .as_array()
                .expect("a metric")
                .iter()
                .filter_map(|p| p.as_str())
                .collect();
            let (namespace, metric_name) = (parts[0], parts[1]);
            // Dimensions come in name, value pairs; AWS namespaces' values name resources.
            for pair in parts[2..].chunks(2) {
                if let [dimension, value] = pair
                    && namespace.starts_with("AWS/")
                {
                    assert!(
                        names.contains(*value),
                        "{}: {namespace} {metric_name} {dimension}={value} names no resource of the stack",
                        stack.name()
                    );
                }
            }
            watched.insert(format!("{namespace} {metric_name}"));
        }
    }
    watched
}

fn cloudformation(stack: &DeployedStack) -> aws_sdk_cloudformation::Client {
    aws_sdk_cloudformation::Client::new(&stack.sdk)
}

/// The stack's resources: logical id to physical id.
async fn resources(stack: &DeployedStack) -> BTreeMap<String, String> {
    let described = cloudformation(stack)
        .describe_stack_resources()
        .stack_name(stack.name())
        .send()
        .await
        .expect("the stack's resources");
    described
        .stack_resources()
        .iter()
        .filter_map(|r| {
            Some((
                r.logical_resource_id()?.to_owned(),
                r.physical_resource_id()?.to_owned(),
            ))
        })
        .collect()
}

/// What the stack's resources are called where a metric names them: each physical id and its
/// last part (a queue URL's name, a topic ARN's name), and the REST API's name, which
/// CloudWatch's `ApiName` dimension carries.
async fn resource_names(stack: &DeployedStack, resources: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for id in resources.values() {
        names.insert(id.clone());
        names.insert(short_name(id).to_owned());
    }
    let api = &resources["RestApi"];
    let (status, answer) = stack.aws_get("apigateway", &format!("/restapis/{api}")).await;
    assert_eq!(status, 200, "GET /restapis/{api}: {answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).expect("the REST API as JSON");
    names.insert(answer["name"].as_str().expect("the REST API's name").to_owned());
    names
}

/// A physical id's last part: a queue's name ends its URL, a topic's its ARN.
fn short_name(id: &str) -> &str {
    id.rsplit(['/', ':']).next().unwrap_or(id)
}
