//! What the mapping invokes: a function from Lambda's event JSON to its response JSON, exactly
//! the wire format Lambda uses, so typed handlers are exercised through their real (de)serialization.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use tokio::time::Instant;

/// The invocation failed as a whole (Lambda's "function error").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error_type}: {message}")]
pub struct FunctionError {
    pub error_type: String,
    pub message: String,
}

impl FunctionError {
    pub fn new(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error_type: error_type.into(),
            message: message.into(),
        }
    }
}

pub trait Function: Send + Sync {
    fn invoke(
        &self,
        event: serde_json::Value,
        deadline: Instant,
    ) -> impl Future<Output = Result<serde_json::Value, FunctionError>> + Send;
}

/// Adapts a typed handler the way the Lambda runtime does: deserialize the event (a failure is a
/// function error), call, serialize the response.
pub struct TypedFunction<H> {
    handler: H,
}

impl<H> TypedFunction<H> {
    pub fn new(handler: H) -> Self {
        Self { handler }
    }
}

/// A typed handler: `async fn(event, deadline) -> Result<response, FunctionError>`.
pub trait TypedHandler: Send + Sync {
    type Event: DeserializeOwned + Send;
    type Response: Serialize;
    fn handle(
        &self,
        event: Self::Event,
        deadline: Instant,
    ) -> impl Future<Output = Result<Self::Response, FunctionError>> + Send;
}

impl<H: TypedHandler> Function for TypedFunction<H> {
    async fn invoke(&self, event: serde_json::Value, deadline: Instant) -> Result<serde_json::Value, FunctionError> {
        let event: H::Event =
            serde_json::from_value(event).map_err(|e| FunctionError::new("Runtime.UnmarshalError", e.to_string()))?;
        let response = self.handler.handle(event, deadline).await?;
        serde_json::to_value(response).map_err(|e| FunctionError::new("Runtime.MarshalError", e.to_string()))
    }
}

/// A shared function (the mapping owns one handle, the caller keeps another).
impl<T: Function> Function for std::sync::Arc<T> {
    fn invoke(
        &self,
        event: serde_json::Value,
        deadline: Instant,
    ) -> impl Future<Output = Result<serde_json::Value, FunctionError>> + Send {
        (**self).invoke(event, deadline)
    }
}

impl<H> TypedFunction<H> {
    pub fn handler(&self) -> &H {
        &self.handler
    }
}
