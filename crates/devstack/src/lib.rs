//! The embedded local stack: the product running on this machine with the Lambdas' own handler
//! code, for `scripts/dev.sh` (through the `devstack` command) and for the tests built on
//! `test-support`.
//!
//! - [`resources`] creates the tables and the Kinesis stream described in `infra/resources.json`,
//!   through the real SDK, wherever the SDK's configuration points (DynamoDB Local and
//!   kinesis-mock, LocalStack, or AWS).
//! - [`server`] serves the API on a local port with the very handler the Lambda runs.
//! - [`pipeline`] runs the relay (or the polling publisher) and the consumers behind in-process
//!   event source mappings configured as the deployed ones.
//! - [`events`] reads the events back from Kinesis, parents before children.
//! - [`channel`] creates the notifications topic and its example subscriber queue, and reads what
//!   the subscriber received.
//! - [`outside`] runs a consumer that lives in a stack of its own (its SAM template and its Lambda
//!   binary, `scripts/dev.sh --consumer DIR`), as a [`process`] that Lambda's Runtime API feeds.

pub mod channel;
pub mod events;
pub mod outside;
pub mod pipeline;
pub mod process;
pub mod resources;
pub mod server;
