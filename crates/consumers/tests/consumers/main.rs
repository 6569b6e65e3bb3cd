//! The consumers' integration tests, one binary (each file a module): delivery semantics on
//! in-memory stores (Kinesis batches and Kafka batches), and decoding properties.

mod decoding_properties;
mod delivery;
mod kafka_delivery;
