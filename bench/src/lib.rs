//! Benchmarks and load generators (see bench/README.md and docs/benchmarks.md).
//!
//! `flotilla-bench` drives real `flotilla-hub` and `flotilla-spoke` processes over
//! loopback and prints comparable tables:
//! - `fleet` (module `fleet`): N simulated spokes (`sim`) against one hub: registration,
//!   idle memory per spoke, B bundles from empty, single-bundle fan-outs and their bytes.
//! - `ha` (module `ha`): a 3-member etcd, hub replicas sharing it and N simulated spokes
//!   spread over them: fan-out latency and etcd writes per commit, leader failover, and
//!   the same fan-outs on a single redb hub.
//! - `spoke-rss` (module `spoke_rss`): a real spoke's memory, idle and loaded.
//! - `spoke-idle` (module `spoke_idle`): the Kubernetes API requests of a real spoke
//!   holding many bundles while idle, counted by kube-apiserver itself.
//! - `kube-apply` (module `kube_apply`): the spoke's applier against `kubectl apply
//!   --server-side` on a real kube-apiserver (first apply of 1,000 objects), and the time
//!   from an out-of-band edit to its correction.
//!
//! Module map: `hub` starts and talks to the hub process; `repo` generates the git repo;
//! `net` opens counted, unshared TLS connections; `machine` reads `/proc`; `stats` and
//! `report` turn samples into tables.
//!
//! **Invariant:** tests built on this assert convergence, never wall-clock time; every
//! wait here is bounded, and all traffic stays on 127.0.0.0/8. This is a tool crate:
//! errors are `anyhow`, as in a binary.
#![forbid(unsafe_code)]

pub mod fleet;
pub mod ha;
pub mod hub;
pub mod kube_apply;
pub mod machine;
pub mod net;
pub mod render_timing;
pub mod repo;
pub mod repo_bench;
pub mod report;
pub mod restart;
pub mod sim;
pub mod soak;
pub mod spoke_idle;
pub mod spoke_rss;
pub mod stats;
pub mod sync_call;
