//! The stack `scripts/deploy-localstack.sh` deployed, as the end-to-end tests see it: its outputs,
//! the SDK pointed at LocalStack, and an HTTP client that reaches the API's URL.
//!
//! `scripts/test.sh` deploys two stacks, one per relay mode, then runs these tests with
//! `E2E_STACK_OUTPUTS` and `E2E_POLLING_STACK_OUTPUTS` (each stack's outputs as
//! `aws cloudformation describe-stacks` prints them) and `AWS_ENDPOINT_URL` (LocalStack). Without
//! them the tests fail, saying so: they never skip.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

pub struct DeployedStack {
    outputs: HashMap<String, String>,
    pub sdk: aws_config::SdkConfig,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub kinesis: aws_sdk_kinesis::Client,
    pub sqs: aws_sdk_sqs::Client,
    /// Reaches the API's URL; a function URL's `*.localhost` host is sent to LocalStack.
    pub http: reqwest::Client,
    pub api_url: String,
}

impl DeployedStack {
    /// The stack whose outputs the file named by `var` holds.
    pub async fn from_env(var: &str) -> Self {
        let path = std::env::var(var).unwrap_or_else(|_| {
            panic!("{var} is not set: these tests run on a stack scripts/deploy-localstack.sh deployed; run them with scripts/test.sh")
        });
        let endpoint = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL points at LocalStack");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
        let listed: Vec<serde_json::Value> = serde_json::from_str(&text).expect("the stack's outputs as JSON");
        let outputs: HashMap<String, String> = listed
            .iter()
            .map(|o| {
                let field = |name: &str| o[name].as_str().expect("an output's key and value").to_owned();
                (field("OutputKey"), field("OutputValue"))
            })
            .collect();
        let sdk = settings::sdk_config().await;
        let api_url = outputs["ApiUrl"].trim_end_matches('/').to_owned();
        let gateway: SocketAddr = endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("AWS_ENDPOINT_URL is http://<ip>:<port>");
        let host = api_url
            .split("://")
            .nth(1)
            .unwrap_or_default()
            .split([':', '/'])
            .next()
            .unwrap_or_default();
        let http = reqwest::Client::builder()
            .resolve(host, gateway)
            .timeout(Duration::from_secs(60))
            .build()
            .expect("an HTTP client");
        Self {
            dynamodb: aws_sdk_dynamodb::Client::new(&sdk),
            kinesis: aws_sdk_kinesis::Client::new(&sdk),
            sqs: aws_sdk_sqs::Client::new(&sdk),
            sdk,
            outputs,
            http,
            api_url,
        }
    }

    /// A stack output (`EventsStreamName`, `OutboxTableName`, ...).
    pub fn output(&self, key: &str) -> &str {
        self.outputs
            .get(key)
            .unwrap_or_else(|| panic!("the stack has no output {key}"))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api_url)
    }

    /// The request's answer: status and JSON body (`Null` when the body is not JSON).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut request = self.http.request(method.clone(), self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path} got no answer: {e}"));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }

    /// Every event on the stack's Kinesis stream, from the start, parents before children.
    pub async fn events_on_kinesis(&self) -> Vec<devstack::events::ReadEvent> {
        let mut mapping = devstack::events::collector(&self.sdk, self.output("EventsStreamName"))
            .await
            .expect("the events stream");
        mapping.drain().await.expect("read the events stream");
        mapping.function().handler().events.lock().unwrap().clone()
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` and the last state after `limit`.
pub async fn eventually<T, S: std::fmt::Debug>(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> Result<T, S>,
) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(state) if tokio::time::Instant::now() > deadline => {
                panic!("{what} did not happen within {limit:?}; last seen: {state:?}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}
