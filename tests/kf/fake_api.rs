//! The fake Anthropic API the binaries' tests use: testkit's, re-exported under the name
//! these tests have always used.

#![allow(unused_imports)]

pub use testkit::fake_api::{FakeApi, REPLY};
