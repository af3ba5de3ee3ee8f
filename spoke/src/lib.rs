//! The flotilla spoke agent. It enrolls once with a join string, then dials out to the hub
//! over mutual TLS, keeps one Sync stream, applies what it is assigned to its target, and
//! reports status. It keeps enforcing its last desired state while the hub is away.
//!
//! Start reading at `cli::run`; then `session` (the stream), `applier` (where bundles go) and
//! `state_dir` (what survives a restart).
//!
//! **Architecture Invariant:** the private key is generated here and never leaves the
//! state dir; no cluster credential is ever sent to the hub.
#![forbid(unsafe_code)]

mod backoff;
pub mod cli;
mod enroll;
mod metrics;
mod reassembly;
mod session;
mod state_dir;
pub mod applier;
