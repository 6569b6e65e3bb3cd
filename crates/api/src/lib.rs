//! The reservation HTTP API, as one function from request to response.
//!
//! [`handle`] is what the Lambda runs (through `lambda_http`) and what the local dev server runs:
//! it never fails and never panics on input; every error becomes an `application/problem+json`
//! response with a stable `code`.

// `Problem` is the error of every request-parsing step; it is built once per failed request, so
// its size (a few machine words) is not worth boxing.
#![allow(clippy::result_large_err)]

pub mod auth;
pub mod handler;
pub mod problem;
pub mod request;
pub mod routes;
pub mod service;

pub use auth::{AuthPolicy, Caller};
pub use handler::{App, handle};
pub use routes::ROUTES;
pub use service::{ReservationService, RetryBudget, RetryPolicy};
