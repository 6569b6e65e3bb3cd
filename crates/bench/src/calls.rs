//! The AWS calls a piece of the product makes, of every service, counted on the wire: an
//! `SdkConfig` whose HTTP client counts each request by `service.Operation` before sending it.
//! Every client built from that configuration is counted, whoever builds it (a consumer's
//! registration builds its own), which an interceptor, set per client, cannot do.

use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, SharedHttpClient, SharedHttpConnector, http_client_fn,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Requests sent so far, by `service.Operation` (`dynamodb.PutItem`, `sns.Publish`).
#[derive(Debug, Clone, Default)]
pub struct CallCounter(Arc<Mutex<BTreeMap<String, u64>>>);

impl CallCounter {
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn reset(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn count(&self, call: String) {
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(call)
            .or_default() += 1;
    }

    /// `sdk` with an HTTP client that counts every request here.
    pub fn counted(&self, sdk: &aws_config::SdkConfig) -> aws_config::SdkConfig {
        // One pooled client underneath, as the SDK's default: connections are reused.
        let inner = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
            .build_https();
        let counter = self.clone();
        let client: SharedHttpClient = http_client_fn(move |settings, components| {
            SharedHttpConnector::new(Counted {
                inner: inner.http_connector(settings, components),
                counter: counter.clone(),
            })
        });
        sdk.to_builder().http_client(client).build()
    }
}

#[derive(Debug)]
struct Counted {
    inner: SharedHttpConnector,
    counter: CallCounter,
}

impl HttpConnector for Counted {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        self.counter.count(call_name(&request));
        self.inner.call(request)
    }
}

/// `service.Operation` of a signed request: the service from SigV4's credential scope
/// (`Credential=<key>/<date>/<region>/<service>/aws4_request`), the operation from `X-Amz-Target`
/// (JSON protocols) or the form's `Action` (query protocols, SNS's).
fn call_name(request: &HttpRequest) -> String {
    let headers = request.headers();
    let service = headers
        .get("authorization")
        .and_then(|auth| auth.split("Credential=").nth(1))
        .and_then(|credential| credential.split('/').nth(3))
        .unwrap_or("unsigned");
    let operation = headers
        .get("x-amz-target")
        .and_then(|target| target.rsplit('.').next())
        .map(str::to_owned)
        .or_else(|| {
            let form = std::str::from_utf8(request.body().bytes()?).ok()?;
            form.split('&')
                .find_map(|pair| pair.strip_prefix("Action="))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| format!("{} {}", request.method(), request.uri()));
    format!("{service}.{operation}")
}
