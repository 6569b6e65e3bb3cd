//! The replay CLI's integration tests on the real engines, one binary (each file a module):
//! replay, audit and re-drive, on Kinesis and on Kafka. The tests of the whole product (the chaos
//! suite, several Regions, the template checks) live in crates/system-tests.

mod audit_on_kinesis;
mod common;
mod redrive_on_kinesis;
mod replay_on_kafka;
mod replay_on_kinesis;
