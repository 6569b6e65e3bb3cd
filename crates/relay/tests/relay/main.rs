//! The relay crate's integration tests, one binary (each file a module): classification of real
//! stream records, decoding properties, the Kinesis sink's error handling, ordering under
//! injected faults, and the polling publisher on in-memory stores.

mod classify_fixtures;
mod common;
mod decoding_properties;
mod kinesis_sink;
mod ordering_under_faults;
mod polling;
