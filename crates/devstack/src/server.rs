//! A local HTTP server in front of `api::handle`, standing in for API Gateway.
//!
//! It turns each hyper request into the `lambda_http::Request` the Lambda would receive (method,
//! path, query, headers, body), so local behaviour is the deployed handler's behaviour.

use api::App;
use api::request::MAX_BODY_BYTES;
use bytes::Bytes;
use domain::ports::{GuestReservationsReader, IdempotencyStore, ReservationStore, SlotStore};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use lambda_http::RequestExt;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Reads at most one byte past the limit: enough for the handler to answer 413 without
/// buffering whatever a client decides to stream at us.
async fn read_limited(mut body: Incoming) -> Result<Vec<u8>, hyper::Error> {
    let mut collected = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            collected.extend_from_slice(&data);
            if collected.len() > MAX_BODY_BYTES {
                collected.truncate(MAX_BODY_BYTES + 1);
                break;
            }
        }
    }
    Ok(collected)
}

fn to_lambda_body(bytes: Vec<u8>) -> lambda_http::Body {
    if bytes.is_empty() {
        return lambda_http::Body::Empty;
    }
    match String::from_utf8(bytes) {
        Ok(text) => lambda_http::Body::Text(text),
        Err(e) => lambda_http::Body::Binary(e.into_bytes()),
    }
}

fn from_lambda_body(body: lambda_http::Body) -> Full<Bytes> {
    match body {
        lambda_http::Body::Text(text) => Full::new(Bytes::from(text)),
        lambda_http::Body::Binary(bytes) => Full::new(Bytes::from(bytes)),
        _ => Full::new(Bytes::new()),
    }
}

async fn serve_one<S, G>(
    app: Arc<App<S, G>>,
    authorizer: Option<Arc<LocalJwtAuthorizer>>,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible>
where
    S: SlotStore + ReservationStore + IdempotencyStore + 'static,
    G: GuestReservationsReader + 'static,
{
    let (parts, body) = req.into_parts();
    let bytes = match read_limited(body).await {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::debug!(error = %e, "client went away while sending the body");
            Vec::new()
        }
    };
    let context = authorizer.as_ref().and_then(|a| a.context(&parts.headers));
    let mut request = lambda_http::Request::from_parts(parts, to_lambda_body(bytes));
    if let Some(context) = context {
        request = request.with_request_context(context);
    }
    let response = api::handle(&app, request).await;
    let (parts, body) = response.into_parts();
    Ok(hyper::Response::from_parts(parts, from_lambda_body(body)))
}

/// Serves until `shutdown` completes. Connections already open finish their current request.
pub async fn serve<S, G>(
    listener: TcpListener,
    app: Arc<App<S, G>>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    S: SlotStore + ReservationStore + IdempotencyStore + 'static,
    G: GuestReservationsReader + 'static,
{
    serve_with(listener, app, None, shutdown).await
}

/// [`serve`], with `authorizer` standing in for API Gateway's JWT authorizer.
pub async fn serve_with<S, G>(
    listener: TcpListener,
    app: Arc<App<S, G>>,
    authorizer: Option<Arc<LocalJwtAuthorizer>>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    S: SlotStore + ReservationStore + IdempotencyStore + 'static,
    G: GuestReservationsReader + 'static,
{
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: report, pause, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let (app, authorizer) = (Arc::clone(&app), authorizer.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| serve_one(Arc::clone(&app), authorizer.clone(), req));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}

/// What API Gateway's JWT authorizer does, for the local server: verifies the bearer token (HS256
/// with a local secret; signature, expiry, issuer and audience) and passes its claims on in the
/// request context, as API Gateway does. A request with no valid token reaches the handler
/// without claims, and under AuthMode JWT it answers 401 (API Gateway answers before it).
pub struct LocalJwtAuthorizer {
    key: jsonwebtoken::DecodingKey,
    validation: jsonwebtoken::Validation,
}

impl LocalJwtAuthorizer {
    pub fn hs256(secret: &[u8], issuer: &str, audience: &str) -> Self {
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        Self {
            key: jsonwebtoken::DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// The request context of a request bearing a valid token.
    fn context(&self, headers: &http::HeaderMap) -> Option<lambda_http::request::RequestContext> {
        use lambda_http::aws_lambda_events::apigw::{
            ApiGatewayRequestAuthorizer, ApiGatewayRequestAuthorizerJwtDescription, ApiGatewayV2httpRequestContext,
        };
        let token = headers
            .get(http::header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?;
        let claims =
            jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &self.key, &self.validation)
                .map_err(|e| tracing::debug!(error = %e, "token refused"))
                .ok()?
                .claims;
        let mut jwt = ApiGatewayRequestAuthorizerJwtDescription::default();
        // As API Gateway passes them: strings as they are, lists as "[a b]", the rest as JSON.
        jwt.claims = claims
            .iter()
            .map(|(name, value)| {
                let text = match value {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Array(items) => {
                        let items: Vec<String> = items
                            .iter()
                            .map(|i| i.as_str().map(str::to_owned).unwrap_or_else(|| i.to_string()))
                            .collect();
                        format!("[{}]", items.join(" "))
                    }
                    other => other.to_string(),
                };
                (name.clone(), text)
            })
            .collect();
        jwt.scopes = claims
            .get("scope")
            .and_then(|s| s.as_str())
            .map(|s| s.split(' ').map(str::to_owned).collect());
        let mut authorizer = ApiGatewayRequestAuthorizer::default();
        authorizer.jwt = Some(jwt);
        let mut context = ApiGatewayV2httpRequestContext::default();
        context.authorizer = Some(authorizer);
        Some(lambda_http::request::RequestContext::ApiGatewayV2(context))
    }
}
