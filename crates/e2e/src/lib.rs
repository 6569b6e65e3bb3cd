//! The stack `scripts/deploy-localstack.sh` deployed, as the end-to-end tests see it: its outputs,
//! the SDK pointed at LocalStack, and an HTTP client that reaches the API's URL, signing each
//! request with SigV4 as a caller of AuthMode IAM does.
//!
//! `scripts/test.sh` deploys two stacks, one per relay mode, then runs these tests with
//! `E2E_STACK_OUTPUTS` and `E2E_POLLING_STACK_OUTPUTS` (each stack's outputs as
//! `aws cloudformation describe-stacks` prints them) and `AWS_ENDPOINT_URL` (LocalStack). Without
//! them the tests fail, saying so: they never skip.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

pub struct DeployedStack {
    /// The stack's name: scripts/deploy-localstack.sh keeps its outputs in
    /// `.../deploy/<stack name>/outputs.json`.
    name: String,
    outputs: HashMap<String, String>,
    pub sdk: aws_config::SdkConfig,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub kinesis: aws_sdk_kinesis::Client,
    pub sqs: aws_sdk_sqs::Client,
    /// Reaches the API's URL; a function URL's `*.localhost` host is sent to LocalStack.
    pub http: reqwest::Client,
    /// The API's base URL as this machine reaches it: the outputs file's `LocalApiUrl`.
    pub api_url: String,
    /// LocalStack's endpoint (`AWS_ENDPOINT_URL`).
    endpoint: String,
}

impl DeployedStack {
    /// The stack whose outputs the file named by `var` holds.
    pub async fn from_env(var: &str) -> Self {
        let path = std::env::var(var).unwrap_or_else(|_| {
            panic!("{var} is not set: these tests run on a stack scripts/deploy-localstack.sh deployed; run them with scripts/test.sh")
        });
        let endpoint = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL points at LocalStack");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
        let name = std::path::Path::new(&path)
            .parent()
            .and_then(|dir| dir.file_name())
            .and_then(|name| name.to_str())
            .unwrap_or_else(|| panic!("{path} is not <stack name>/outputs.json"))
            .to_owned();
        let listed: Vec<serde_json::Value> = serde_json::from_str(&text).expect("the stack's outputs as JSON");
        let outputs: HashMap<String, String> = listed
            .iter()
            .map(|o| {
                let field = |name: &str| o[name].as_str().expect("an output's key and value").to_owned();
                (field("OutputKey"), field("OutputValue"))
            })
            .collect();
        let sdk = settings::sdk_config().await;
        // The stack's ApiUrl is the AWS form, which LocalStack serves under a .localhost name
        // behind a self-signed certificate; the deploy adds the URL that works here.
        let api_url = outputs
            .get("LocalApiUrl")
            .unwrap_or_else(|| {
                panic!(
                    "{path} has no LocalApiUrl: deploy the stack again with scripts/deploy-localstack.sh, which adds it"
                )
            })
            .trim_end_matches('/')
            .to_owned();
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
            name,
            outputs,
            http,
            api_url,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
        }
    }

    /// The stack's name, as `reservations-replay --stack` takes it.
    pub fn name(&self) -> &str {
        &self.name
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

    /// The request's answer, signed with the SDK's credentials: status and JSON body (the text
    /// when it is not JSON).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let answer = self.send(method, path, body.map(|b| b.to_string())).await;
        (answer.status, answer.body)
    }

    /// Sends `body` (as JSON), signed with the SDK's credentials.
    pub async fn send(&self, method: reqwest::Method, path: &str, body: Option<String>) -> Answer {
        let body = body.unwrap_or_default();
        let mut request = self
            .http
            .request(method.clone(), self.url(path))
            .build()
            .expect("a request");
        if !body.is_empty() {
            request.headers_mut().insert(
                "content-type",
                reqwest::header::HeaderValue::from_static("application/json"),
            );
            *request.body_mut() = Some(body.clone().into());
        }
        self.sign(&mut request, body.as_bytes(), "execute-api").await;
        let response = self
            .http
            .execute(request)
            .await
            .unwrap_or_else(|e| panic!("{method} {path} got no answer: {e}"));
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = response.text().await.unwrap_or_default();
        Answer {
            status,
            content_type,
            body: serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        }
    }

    /// A GET of an AWS REST API that no SDK client of this crate covers, signed for `service`:
    /// `path` on LocalStack's endpoint. The status and the body's text.
    pub async fn aws_get(&self, service: &str, path: &str) -> (u16, String) {
        let mut request = self
            .http
            .get(format!("{}{path}", self.endpoint))
            .build()
            .expect("a request");
        self.sign(&mut request, &[], service).await;
        let response = self
            .http
            .execute(request)
            .await
            .unwrap_or_else(|e| panic!("{service} {path} got no answer: {e}"));
        (response.status().as_u16(), response.text().await.unwrap_or_default())
    }

    /// Signs `request` with SigV4 for `service` (`execute-api` as an AuthMode IAM caller of the
    /// API does).
    async fn sign(&self, request: &mut reqwest::Request, body: &[u8], service: &str) {
        use aws_credential_types::provider::ProvideCredentials;
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        let credentials = self
            .sdk
            .credentials_provider()
            .expect("credentials to sign with")
            .provide_credentials()
            .await
            .expect("credentials to sign with");
        let identity = credentials.into();
        let region = self.sdk.region().expect("a region").to_string();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&region)
            .name(service)
            .time(std::time::SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .expect("signing parameters")
            .into();
        let host = request.url().authority().to_owned();
        let mut headers: Vec<(String, String)> = vec![("host".into(), host)];
        for (name, value) in request.headers() {
            headers.push((
                name.as_str().to_owned(),
                value.to_str().expect("ASCII headers").to_owned(),
            ));
        }
        let signable = SignableRequest::new(
            request.method().as_str(),
            request.url().as_str(),
            headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
            SignableBody::Bytes(body),
        )
        .expect("a signable request");
        let (instructions, _) = sign(signable, &params).expect("a signature").into_parts();
        let (signed_headers, _) = instructions.into_parts();
        for header in signed_headers {
            request.headers_mut().insert(
                reqwest::header::HeaderName::from_bytes(header.name().as_bytes()).expect("a header name"),
                reqwest::header::HeaderValue::from_str(header.value()).expect("a header value"),
            );
        }
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

/// An HTTP answer: its status, content type and body (JSON, or the text when it is not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: serde_json::Value,
}

/// The `reservations-replay` the workspace built, beside the running test's binary
/// (`target/<profile>/`; scripts/test.sh builds it).
pub fn replay_cli() -> std::path::PathBuf {
    let cli = std::env::current_exe()
        .expect("the test's path")
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("reservations-replay"))
        .expect("target directory");
    assert!(cli.is_file(), "{} is built (scripts/test.sh builds it)", cli.display());
    cli
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
