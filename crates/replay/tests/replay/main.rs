//! The replay CLI's integration tests on the real engines, one binary (each file a module):
//! replay, audit, re-drive (on Kinesis and on Kafka), and the chaos suite that audits the whole
//! pipeline under faults.

mod audit_on_kinesis;
mod chaos;
mod common;
mod multi_region;
mod redrive_on_kinesis;
mod replay_on_kafka;
mod replay_on_kinesis;
