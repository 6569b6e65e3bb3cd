//! End-to-end tests of the product on the embedded local stack (DynamoDB Local, kinesis-mock,
//! the Tansu Kafka broker, started by `scripts/test.sh`), one binary (each file a module): the
//! API, the stream relay (to Kinesis and to Kafka) and
//! the polling publisher, the consumers, load, the API fuzz and the smoke script. The static checks
//! of `template.yaml` live with the other tests of the whole product, in crates/system-tests.

mod api_fuzz;
mod api_on_dynamodb_local;
mod auth_on_the_local_api;
mod booking_ledger;
mod devstack_on_kafka;
mod item_limits;
mod load;
mod localstack_script;
mod notifications_on_sns;
mod pipeline_on_kafka;
mod pipeline_to_consumers;
mod polling_to_kinesis;
mod python_consumer;
mod relay_to_kafka;
mod relay_to_kinesis;
mod sharded_slots;
mod smoke_script;
