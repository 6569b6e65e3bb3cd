//! No code: this package holds the tests of the whole product (`tests/system`), so that they
//! have one home instead of living in whichever tool's crate they happened to use.
