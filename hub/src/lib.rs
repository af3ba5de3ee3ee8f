//! The flotilla hub: polls git, renders bundles, targets clusters by label, serves the
//! Registration, Spoke and Admin gRPC services, and keeps fleet state in an embedded store.
//!
//! Start reading at `cli::run` (what `flotilla-hub init|run` do), then `fleet` (the state
//! and reconcile), `sources` (git polling and publishing), and `server` (gRPC).
//!
//! **Architecture Invariant:** the hub never holds a cluster credential and never dials a
//! cluster; spokes dial in. It knows clusters only by their certificates.
#![forbid(unsafe_code)]

pub mod audit;
pub mod charts;
pub mod cli;
mod commands;
mod credentials;
pub mod dashboard;
mod depends;
mod fleet;
pub mod git;
mod ha;
pub mod history;
pub mod http;
#[cfg(test)]
mod invariants;
pub mod kube_mode;
mod label_trust;
mod layout;
mod metrics;
mod pki;
mod queries;
mod reconcile;
pub mod record_id;
pub mod records;
mod renewals;
mod rollout;
mod server;
mod sources;
mod statuses;
pub mod store;
mod targeting;
mod tokens;
