//! The consumers' integration tests, one binary (each file a module): delivery semantics on
//! in-memory stores (Kinesis batches and Kafka batches), decoding properties, and the consumer
//! kit's types held to the published contract.

mod contract_types;
mod decoding_properties;
mod delivery;
mod kafka_delivery;
