//! The API crate's integration tests, one binary (each file a module): the handler against its
//! OpenAPI document, its metrics, and its answers when DynamoDB refuses.

mod dynamodb_error_responses;
mod metrics;
mod openapi_contract;
mod rest_api_events;
