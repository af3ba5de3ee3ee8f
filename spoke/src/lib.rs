//! The flotilla spoke agent. It enrolls once with a join string, then dials out to the hub
//! over mutual TLS, keeps one Sync stream, applies what it is assigned to its target, and
//! reports status. It keeps enforcing its last desired state while the hub is away.
//!
//! Start reading at `cli::run`; then `session` (the stream and enforcement), `dial`
//! (which hub address next), `renewal` (the certificate's own task), `applier` (where
//! bundles go) and `state_dir` (what survives a restart).
//!
//! **Architecture Invariant:** the private key is generated here and never leaves the
//! state dir; no cluster credential is ever sent to the hub.
#![forbid(unsafe_code)]

pub mod applier;
mod backoff;
pub mod cli;
mod dial;
mod enroll;
#[cfg(test)]
mod fake_hub;
mod metrics;
mod reassembly;
mod renewal;
mod session;
mod state_dir;
