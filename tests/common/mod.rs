//! The shared fixtures for the integration tests (`mod common;`): a thin re-export of the
//! `testkit` crate, so every test file reaches them by the same `common::…` names.

#![allow(unused_imports)]

pub use testkit::*;
