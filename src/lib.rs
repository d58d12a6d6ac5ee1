//! Keyferry: a host-side broker that keeps AI CLI tokens in the OS keychain and ferries
//! them into sandboxes. Everything testable lives in this library; the binaries are glue.

#![deny(unsafe_code)]
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod agent;
pub mod api;
pub mod atomic;
pub mod audit;
pub mod broker;
pub mod cfauth;
pub mod client;
pub mod config;
pub mod credential;
pub mod doctor;
pub mod domain;
pub mod dotenv;
pub mod error;
pub mod escape;
pub mod expiry;
pub mod gateway;
pub mod harden;
pub mod http;
pub mod launch;
pub mod ledger;
pub mod notification;
pub mod oauth;
pub mod panic;
pub mod paths;
pub mod policy;
pub mod protocol;
pub mod provider;
pub mod provision;
pub mod random;
pub mod recipe;
pub mod remote;
pub mod report;
pub mod reroll;
pub mod safe_file;
pub mod sandbox_home;
pub mod secret;
pub mod service;
pub mod sink;
pub mod sink_path;
pub mod snapshot;
pub mod source;
pub mod store;
pub mod suggest;
pub mod sys;
pub mod tray;
pub mod trim;

pub use error::{Error, ErrorBody};
pub use secret::Secret;
