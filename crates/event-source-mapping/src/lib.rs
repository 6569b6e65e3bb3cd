//! Lambda's event source mapping, in-process.
//!
//! [`EventSourceMapping`] polls the shards of a [`source::StreamSource`] (DynamoDB Streams,
//! Kinesis, or a Kafka topic's partitions, [`kafka`]), builds each batch exactly as Lambda does (same JSON record shape, `eventSourceARN`,
//! `awsRegion`, sequence numbers), drops what the [`filter::FilterCriteria`] rejects, and invokes a
//! [`Function`] with Lambda's semantics:
//!
//! - batch size and batching window;
//! - shards in lineage order: a child shard starts only after its parents are read to the end;
//! - `ReportBatchItemFailures`: the batch resumes from the lowest reported sequence number;
//! - `BisectBatchOnFunctionError`: a failing batch is split in two and each half retried;
//! - `MaximumRetryAttempts` and `MaximumRecordAgeInSeconds` (`None` = unlimited);
//! - an on-failure destination that receives the batch metadata Lambda sends to SQS.
//!
//! [`EventSourceMapping::drain`] processes everything available now and returns: tests use it
//! instead of sleeping.

pub mod filter;
pub mod function;
pub mod kafka;
pub mod lineage;
pub mod mapping;
pub mod on_failure;
pub mod source;

pub use filter::FilterCriteria;
pub use function::{Function, FunctionError};
pub use kafka::KafkaSource;
pub use lineage::{kinesis_shards, lineage_order};
pub use mapping::{DrainReport, EventSourceMapping, MappingConfig, StartingPosition};
pub use on_failure::{JsonLinesOnFailure, MemoryOnFailure, OnFailureDestination};
pub use source::{DynamoDbStreamsSource, KinesisSource, ShardInfo, SourceRecord, StreamSource};
