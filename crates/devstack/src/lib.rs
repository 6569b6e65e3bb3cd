//! The embedded local stack: what `scripts/dev.sh` and the integration tests run.
//!
//! - [`resources`] creates the tables and the Kinesis stream described in `infra/resources.json`,
//!   through the real SDK, wherever the SDK's configuration points (DynamoDB Local and
//!   kinesis-mock, LocalStack, or AWS).
//! - [`server`] serves the API on a local port with the very handler the Lambda runs.

pub mod events;
pub mod pipeline;
pub mod resources;
pub mod server;
pub mod testing;
