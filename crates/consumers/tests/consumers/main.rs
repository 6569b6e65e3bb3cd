//! The consumers' integration tests, one binary (each file a module): delivery semantics on
//! in-memory stores, and decoding properties.

mod decoding_properties;
mod delivery;
