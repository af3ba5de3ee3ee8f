//! Pure domain types shared by the hub, the spoke, the renderer and the CLI.
//!
//! This crate owns names, labels, label selectors, bundle and object states, status
//! summaries, and the per-deployment options a spoke enforces.
//! **Architecture Invariant:** it does no I/O and knows nothing about gRPC, git, files or
//! Kubernetes clients; wire types are converted into these at the edges.
#![forbid(unsafe_code)]

pub mod deploy;
pub mod digest;
pub mod duration;
pub mod labels;
pub mod names;
pub mod redact;
pub mod selector;
pub mod state;

pub use deploy::{ComparePatch, DeployOptions, IgnoreCondition, PatchOperation};
pub use digest::{ContentDigest, DeploymentId};
pub use labels::{LabelError, Labels, parse_labels};
pub use names::{ClusterName, NameError};
pub use redact::{redact_in, redact_url};
pub use selector::{LabelSelector, Operator, Requirement, SelectorError};
pub use state::{ResourceStatus, State, Summary};
